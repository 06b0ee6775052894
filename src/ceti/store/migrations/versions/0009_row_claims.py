"""nodes and ledger_meters: a claim (token and expiry) for the background sweeps every replica shares

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("nodes", "ledger_meters")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claim_token", sa.String(32), nullable=True))
            batch.add_column(sa.Column("claim_expires_at", sa.Float(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claim_expires_at")
            batch.drop_column("claim_token")
