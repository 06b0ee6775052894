"""leader_leases: which server replica leads a role (the scheduling round), in which term, until when

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("term", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", sa.Float(), nullable=False, server_default="0"),
    )
    # the row exists from the start, so taking and renewing the lease is always one UPDATE
    op.bulk_insert(table, [{"name": "scheduler", "holder": None, "term": 0, "expires_at": 0.0}])


def downgrade() -> None:
    op.drop_table("leader_leases")
