"""ledger: double-entry accounts and entries (integer micro-USD), per-allocation metering state, budgets

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("balance_micro", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("kind", "owner_id", name="uq_ledger_accounts_owner"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("txn_id", sa.String(36), nullable=False),
        sa.Column("account_id", _id(), sa.ForeignKey("ledger_accounts.id"), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("allocation_id", sa.String(36), nullable=True),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("node_id", sa.String(36), nullable=True),
        sa.Column("period_from", sa.Float(), nullable=False),
        sa.Column("period_to", sa.Float(), nullable=False),
        sa.Column("booked_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_ledger_entries_txn_id", "ledger_entries", ["txn_id"])
    op.create_index("ix_ledger_entries_allocation_id", "ledger_entries", ["allocation_id"])
    op.create_index("ix_ledger_entries_account_period", "ledger_entries", ["account_id", "period_to"])
    op.create_table(
        "ledger_meters",
        sa.Column("allocation_id", sa.String(36), sa.ForeignKey("allocations.id"), primary_key=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("provider_id", sa.String(36), nullable=False),
        sa.Column("priced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("provider_rate_nano", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("fee_rate_nano", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("metered_to", sa.Float(), nullable=True),
        sa.Column("end_at", sa.Float(), nullable=True),
        sa.Column("budget_stop_at", sa.Float(), nullable=True),
        sa.Column("charged_micro", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("provider_micro", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("fabric_micro", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("closed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_ledger_meters_project_id", "ledger_meters", ["project_id"])
    op.create_index("ix_ledger_meters_closed", "ledger_meters", ["closed"])
    op.create_table(
        "ledger_budgets",
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("cap_micro", sa.BigInteger(), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_budgets")
    op.drop_index("ix_ledger_meters_closed", "ledger_meters")
    op.drop_index("ix_ledger_meters_project_id", "ledger_meters")
    op.drop_table("ledger_meters")
    op.drop_index("ix_ledger_entries_account_period", "ledger_entries")
    op.drop_index("ix_ledger_entries_allocation_id", "ledger_entries")
    op.drop_index("ix_ledger_entries_txn_id", "ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_accounts")
