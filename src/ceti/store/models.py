"""The tables. Times are UNIX seconds (float) so SQLite and PostgreSQL agree and services can take `now`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 -- SQLAlchemy reads it as is


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Provider(Base):
    __tablename__ = "providers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # admin | provider | project
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), nullable=True)
    provider_id: Mapped[str | None] = mapped_column(ForeignKey("providers.id"), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id"), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(64), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)  # the agent's NodeInfo
    state: Mapped[str] = mapped_column(String(16), index=True)  # online | lost
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float] = mapped_column(Float)
    lost_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # fencing: bumped by every change of the node's allocations (see ceti.store.fencing); the agent obeys
    # only a desired state at least as new as the newest it has seen
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # proof of hardware (services/verification.py): the verdict for the claimed hardware it was given for; a
    # change of claim clears it
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_estimate: Mapped[str | None] = mapped_column(String(128), nullable=True)
    verdict_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pinned_gpu_uuids: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    next_verify_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    verify_challenge_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the open challenge
    # which replica's lost-node sweep holds the node, until when (services/claims.py)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    claim_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    # place in the queue; a retried job keeps it, so it never falls behind newer jobs of its priority
    queue_order: Mapped[int] = mapped_column(BigInteger, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    log_chunks: Mapped[int] = mapped_column(Integer, default=0)
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key", name="uq_jobs_project_idempotency"),
        Index("ix_jobs_state_priority_order", "state", "priority", "queue_order"),
    )


class Allocation(Base):
    """One attempt of a job on a node."""

    __tablename__ = "allocations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    gpu_indices: Mapped[list[Any]] = mapped_column(JSON)
    gpu_share_milli: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_mib: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory_mib: Mapped[float | None] = mapped_column(Float, nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # a multi-node job has one allocation per node and attempt: task 0 is the head (its exit is the job's)
    task_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    port_base: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the block of ports its engine uses


class LogChunk(Base):
    """A piece of a job's output, identified by (allocation, stream, byte offset): uploads are idempotent."""

    __tablename__ = "log_chunks"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    allocation_id: Mapped[str] = mapped_column(ForeignKey("allocations.id"))
    stream: Mapped[str] = mapped_column(String(8))
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("allocation_id", "stream", "offset", name="uq_log_chunks_piece"),)


class Event(Base):
    """Every state change of a job (and of the nodes it ran on), with when and why."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    allocation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[float] = mapped_column(Float, index=True)


class AuditEntry(Base):
    """Who did what, when and from where: every admin action and every refused use of a token."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # token id, or a hash prefix of an unknown token
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(300))
    status: Mapped[int] = mapped_column(Integer)
    remote: Mapped[str] = mapped_column(String(64))


class Secret(Base):
    """A project's secret, encrypted at rest with the server's key; only its name is ever shown."""

    __tablename__ = "secrets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_secrets_project_name"),)


class Verification(Base):
    """One proof-of-hardware challenge: the verifier's session between steps, and its verdict."""

    __tablename__ = "verifications"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the challenge id
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # issued | roots | done
    fingerprint: Mapped[str] = mapped_column(String(64))  # the claimed hardware challenged
    session: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[float] = mapped_column(Float)
    roots_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_estimate: Mapped[str | None] = mapped_column(String(128), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    __table_args__ = (Index("ix_verifications_node_issued", "node_id", "issued_at"),)


# -- the ledger (services/ledger.py): double entry, integer micro-USD ----------------------------------


class LedgerAccount(Base):
    """One account per project, per provider, and the fabric's own (kind "fabric", owner "fabric").
    `balance_micro` is the sum of its entries, kept with every posting (projects' balances are negative)."""

    __tablename__ = "ledger_accounts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # project | provider | fabric
    owner_id: Mapped[str] = mapped_column(String(36))
    balance_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("kind", "owner_id", name="uq_ledger_accounts_owner"),)


class LedgerEntry(Base):
    """One leg of a transaction: the legs sharing a `txn_id` sum to zero. A debit is negative."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    txn_id: Mapped[str] = mapped_column(String(36), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # usage
    allocation_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    period_from: Mapped[float] = mapped_column(Float)
    period_to: Mapped[float] = mapped_column(Float)
    booked_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_ledger_entries_account_period", "account_id", "period_to"),)


class LedgerMeter(Base):
    """Metering state of one allocation: its rates, fixed when first metered, and what is booked so far.

    `metered_to` is the watermark: time before it is booked. The `*_micro` columns are cumulative, so a pass books
    only the difference between what the rates say up to its end and what is already booked."""

    __tablename__ = "ledger_meters"
    allocation_id: Mapped[str] = mapped_column(ForeignKey("allocations.id"), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    node_id: Mapped[str] = mapped_column(String(36))
    provider_id: Mapped[str] = mapped_column(String(36))
    priced: Mapped[bool] = mapped_column(Boolean, default=False)
    provider_rate_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # nano-USD per hour
    fee_rate_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    metered_to: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # charge until here (set when it ends)
    budget_stop_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # the fabric pays from here on
    charged_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    provider_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    fabric_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    closed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    # which replica's metering pass holds the meter, until when (services/claims.py)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    claim_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LedgerBudget(Base):
    """A project's spending cap: its total charges may not pass `cap_micro`."""

    __tablename__ = "ledger_budgets"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    cap_micro: Mapped[int] = mapped_column(BigInteger)
    set_at: Mapped[float] = mapped_column(Float)


# -- replicas (services/leader.py) ---------------------------------------------------------------------


class LeaderLease(Base):
    """Which server replica leads a role ("scheduler"), in which term, until when. A takeover increments `term`;
    every transaction written as leader locks this row and checks its term first (fencing)."""

    __tablename__ = "leader_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)  # a replica id, made at its start
    term: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


# -- the Akash market (services/akash_market.py) ---------------------------------------------------------


class AkashLease(Base):
    """An Akash order the fabric was offered, through its bid to the lease and its close (networks/akash/lease.py
    is the state machine). `usd_per_hour` is what the lease pays, at the bid's token price."""

    __tablename__ = "akash_leases"
    order_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # owner/dseq/gseq/oseq
    state: Mapped[str] = mapped_column(String(16), index=True)
    order: Mapped[dict[str, Any]] = mapped_column(JSON)
    bid: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    usd_per_hour: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    job_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
