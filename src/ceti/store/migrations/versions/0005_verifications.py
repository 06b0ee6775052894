"""verifications: proof-of-hardware challenges and verdicts; the current verdict on nodes

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NODE_COLUMNS = (
    ("verdict", sa.String(16)),
    ("model_estimate", sa.String(128)),
    ("verdict_at", sa.Float()),
    ("verdict_fingerprint", sa.String(64)),
    ("pinned_gpu_uuids", sa.JSON()),
    ("next_verify_at", sa.Float()),
    ("verify_challenge_id", sa.String(32)),
)


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch_op:
        for name, kind in NODE_COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("node_id", sa.String(36), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("session", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("roots_at", sa.Float(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("model_estimate", sa.String(128), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("evidence", sa.JSON(), nullable=True),
    )
    op.create_index("ix_verifications_node_id", "verifications", ["node_id"])
    op.create_index("ix_verifications_state", "verifications", ["state"])
    op.create_index("ix_verifications_node_issued", "verifications", ["node_id", "issued_at"])


def downgrade() -> None:
    op.drop_index("ix_verifications_node_issued", "verifications")
    op.drop_index("ix_verifications_state", "verifications")
    op.drop_index("ix_verifications_node_id", "verifications")
    op.drop_table("verifications")
    with op.batch_alter_table("nodes") as batch_op:
        for name, _ in reversed(NODE_COLUMNS):
            batch_op.drop_column(name)
