"""allocations of multi-node jobs: which task of the gang (0 = the head), and the block of ports it holds

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.add_column(sa.Column("task_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("port_base", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.drop_column("port_base")
        batch.drop_column("task_index")
