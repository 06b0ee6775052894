"""The store the service tests share: a migrated database (SQLite, and PostgreSQL through `database_url`) with the
first admin and one provider, for tests that drive the services with the clock in their hands."""

from __future__ import annotations

from pathlib import Path

import pytest

from ceti.server.services.tokens import Principal, bootstrap_admin, ensure_provider
from ceti.store.db import make_engine, migrate, session_factory


def make_db(url: str):
    """(engine, session factory, the provider's principal) on a freshly migrated database at `url`."""
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        bootstrap_admin(s, 0.0)
        provider = ensure_provider(s, "p", 0.0)
        s.commit()
    return engine, sessions, Principal("pt", "provider", provider_id=provider.id)


@pytest.fixture
def db(tmp_path: Path, database_url: str | None):
    engine, sessions, who = make_db(database_url or f"sqlite:///{tmp_path / 'ceti.db'}")
    yield sessions, who
    engine.dispose()


@pytest.fixture
def pg_db(postgres):
    """The same store on PostgreSQL only, for races that need row locks."""
    engine, sessions, who = make_db(postgres.new_database())
    yield sessions, who
    engine.dispose()
