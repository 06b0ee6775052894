"""Server settings: flags override environment (CETI_*), which overrides defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class VerifySettings:
    """Proof of hardware (see services/verification.py)."""

    enabled: bool = field(default_factory=lambda: os.environ.get("CETI_VERIFY_ENABLED", "1") != "0")
    # re-checks come at random: exponential gaps with this mean, so a provider cannot predict them
    mean_interval_s: float = field(default_factory=lambda: _env_float("CETI_VERIFY_MEAN_INTERVAL_S", 86400.0))
    retry_after_failed_s: float = field(default_factory=lambda: _env_float("CETI_VERIFY_RETRY_AFTER_FAILED_S", 3600.0))
    # cap on each GPU's matrices and memory fill, and a CPU node's budget (MiB); 0 = fill the claimed VRAM
    budget_mib: int = field(default_factory=lambda: _env_int("CETI_VERIFY_BUDGET_MIB", 0))
    rows_per_pass: int = field(default_factory=lambda: _env_int("CETI_VERIFY_ROWS_PER_PASS", 8))
    overhead_s: float = field(default_factory=lambda: _env_float("CETI_VERIFY_OVERHEAD_S", 2.0))


@dataclass
class LedgerSettings:
    """Metering and the fabric's fee (see services/ledger.py)."""

    # running work is booked at least this often; a budget may be overrun by at most one interval's cost
    meter_interval_s: float = field(default_factory=lambda: _env_float("CETI_METER_INTERVAL_S", 60.0))
    # the fabric's fee on top of the provider's ask, in basis points (1000 = 10%), never past a job's bid
    fee_bps: int = field(default_factory=lambda: _env_int("CETI_FABRIC_FEE_BPS", 1000))


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("CETI_DATA_DIR", "~/.ceti/server")).expanduser())
    database_url: str | None = field(default_factory=lambda: os.environ.get("CETI_DATABASE_URL") or None)
    schedule_interval_s: float = field(default_factory=lambda: _env_float("CETI_SCHEDULE_INTERVAL_S", 1.0))
    heartbeat_interval_s: float = field(default_factory=lambda: _env_float("CETI_HEARTBEAT_INTERVAL_S", 2.0))
    # the operator's decentralized networks (YAML, see ceti.networks.config); unset = no back-fill
    networks_config: str | None = field(default_factory=lambda: os.environ.get("CETI_NETWORKS_CONFIG") or None)
    network_estimate_ttl_s: float = field(default_factory=lambda: _env_float("CETI_NETWORK_ESTIMATE_TTL_S", 300.0))
    # a node silent this long is declared lost and its work rescheduled
    node_lost_after_s: float = field(default_factory=lambda: _env_float("CETI_NODE_LOST_AFTER_S", 30.0))
    # every replica sweeps for lost nodes this often (and meters a few times per meter interval); unset = the
    # schedule interval
    sweep_interval_s: float | None = field(
        default_factory=lambda: _env_float("CETI_SWEEP_INTERVAL_S", 0.0) or None)
    # quiet heartbeats' times are written in batches this often (background/heartbeat_clock.py)
    heartbeat_flush_s: float = field(default_factory=lambda: _env_float("CETI_HEARTBEAT_FLUSH_S", 0.5))
    # a sweep's claim on a row (a node, a meter): a replica that dies holding one delays that row by this much
    claim_ttl_s: float = field(default_factory=lambda: _env_float("CETI_CLAIM_TTL_S", 15.0))
    # the scheduler's leader lease: a dead leader's replacement takes over within about 1.25x this (docs/replicas.md)
    leader_lease_s: float = field(default_factory=lambda: _env_float("CETI_LEADER_LEASE_S", 10.0))
    # False: this replica serves requests and never schedules (PostgreSQL only); the rounds run in another
    # replica that is given no traffic, so they never compete with requests for this one's interpreter
    schedule: bool = field(default_factory=lambda: os.environ.get("CETI_SCHEDULE", "1") != "0")
    # how a round picks each task's node: a placement policy ("fabric": FGD's fragmentation measure with GPU-model
    # protection, after cost) on clusters small enough to score every node per task, else the class flow; "flow"
    # always uses the class flow (ceti.fabric.per_task)
    placement: str = field(default_factory=lambda: os.environ.get("CETI_PLACEMENT", "fabric"))
    stop_grace_s: float = field(default_factory=lambda: _env_float("CETI_STOP_GRACE_S", 10.0))
    max_body_bytes: int = field(default_factory=lambda: _env_int("CETI_MAX_BODY_BYTES", 2 * 1024 * 1024))
    # rows of a proof-of-hardware answer: 8 rows per GPU of a product that fills 80 GB, for 8 GPUs, is ~15 MB
    max_proof_body_bytes: int = field(
        default_factory=lambda: _env_int("CETI_MAX_PROOF_BODY_BYTES", 64 * 1024 * 1024))
    max_log_chunk_bytes: int = field(default_factory=lambda: _env_int("CETI_MAX_LOG_CHUNK_BYTES", 256 * 1024))
    max_log_bytes_per_job: int = field(default_factory=lambda: _env_int("CETI_MAX_LOG_BYTES_PER_JOB", 16 * 1024 * 1024))
    max_log_chunks_per_job: int = field(default_factory=lambda: _env_int("CETI_MAX_LOG_CHUNKS_PER_JOB", 20_000))
    # threads serving requests; the database pool gets these plus a few for the background loops
    request_threads: int = field(default_factory=lambda: _env_int("CETI_REQUEST_THREADS", 32))
    # per caller (token, or token and node for heartbeats); 0 turns the limit off
    rate_limit_per_s: float = field(default_factory=lambda: _env_float("CETI_RATE_LIMIT_PER_S", 100.0))
    rate_limit_burst: float = field(default_factory=lambda: _env_float("CETI_RATE_LIMIT_BURST", 400.0))
    # Fernet key for job secrets; unset, the server makes one in its data directory at first start
    secret_key: str | None = field(default_factory=lambda: os.environ.get("CETI_SECRET_KEY") or None)
    max_jobs_per_project: int = field(default_factory=lambda: _env_int("CETI_MAX_ACTIVE_JOBS_PER_PROJECT", 100_000))
    verify: VerifySettings = field(default_factory=VerifySettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)

    _box: object | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ceti.db').resolve()}"

    def secret_box(self):
        """The cipher for job secrets (made on first use: most requests never need it)."""
        from ceti.server.services.secrets import SecretBox, load_key

        if self._box is None:
            self._box = SecretBox(self.secret_key.encode() if self.secret_key else load_key(self.data_dir))
        return self._box

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")
