"""Alembic environment: runs on the connection the caller passes (see ceti.store.db.migrate)."""

from alembic import context
from sqlalchemy import create_engine

from ceti.store.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` run by hand, e.g. to autogenerate a revision
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///ceti-dev.db"
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
