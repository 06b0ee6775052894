"""akash_leases: the provider side of the Akash market, one row per order the fabric was offered

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "akash_leases",
        sa.Column("order_id", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("order", sa.JSON(), nullable=False),
        sa.Column("bid", sa.JSON(), nullable=True),
        sa.Column("usd_per_hour", sa.Float(), nullable=True),
        sa.Column("lease_id", sa.String(200), nullable=True),
        sa.Column("job_ids", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("akash_leases")
