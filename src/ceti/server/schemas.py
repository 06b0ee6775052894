"""Request and response bodies of the REST API (what the OpenAPI schema shows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ceti.spec import NodeInfo


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NameIn(_Body):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")


class NamedOut(BaseModel):
    id: str
    name: str
    created_at: float


class TokenIn(_Body):
    kind: str = Field(..., pattern="^(admin|provider|project)$")
    name: str = Field("", max_length=128)
    project: str | None = Field(None, max_length=64, description="project name (project tokens)")
    provider: str | None = Field(None, max_length=64, description="provider name (provider tokens)")


class TokenOut(BaseModel):
    id: str
    kind: str
    name: str
    project_id: str | None
    provider_id: str | None
    created_at: float
    revoked_at: float | None
    token: str | None = Field(None, description="the secret, shown only when the token is created")


class WhoAmI(BaseModel):
    kind: str
    project_id: str | None
    provider_id: str | None


class JobOut(BaseModel):
    id: str
    project_id: str
    name: str
    state: str
    reason: str
    priority: int
    attempts: int
    retries: int
    exit_code: int | None
    created_at: float
    updated_at: float
    finished_at: float | None
    log_truncated: bool
    node_id: str | None = None
    spec: dict[str, Any]


class AllocationOut(BaseModel):
    id: str
    node_id: str
    attempt: int
    state: str
    gpu_indices: list[int]
    gpu_share_milli: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    stop_reason: str
    task_index: int = 0
    cpu_seconds: float | None
    peak_memory_mib: float | None
    wall_s: float | None


class JobDetailOut(JobOut):
    allocations: list[AllocationOut]


class EventOut(BaseModel):
    id: int
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str
    at: float
    node_id: str | None
    allocation_id: str | None


class LogChunkOut(BaseModel):
    id: int
    allocation_id: str
    stream: str
    offset: int
    data: str


class LogsOut(BaseModel):
    chunks: list[LogChunkOut]
    next_after_id: int
    truncated: bool
    finished: bool


class NodeOut(BaseModel):
    id: str
    provider_id: str
    hostname: str
    region: str
    state: str
    registered_at: float
    last_heartbeat_at: float
    info: dict[str, Any]
    allocations: int = 0
    verdict: str | None = Field(None, description="proof of hardware for the claimed hardware: verified, mismatch, "
                                "failed; none while unchecked")
    model_estimate: str | None = Field(None, description="the model the proof of hardware found")
    verdict_at: float | None = None
    next_verify_at: float | None = None
    reliability: float | None = Field(None, description="probability that an hour of work placed here finishes "
                                      "(posterior mean over the last days' uptime, node-caused ends and verdict)")
    reliability_low: float | None = Field(None, description="the 5% credible lower bound of `reliability`")


class RegisterIn(_Body):
    node_id: str | None = Field(None, max_length=36, description="the id a restarted agent had")
    info: NodeInfo


class RegisterOut(BaseModel):
    node_id: str
    heartbeat_interval_s: float
    epoch: int | None = Field(None, description=(
        "for a new node: the epoch of its desired state, which is to run nothing. An agent that runs nothing "
        "may hold it, and its first heartbeat is then answered `unchanged` like any other quiet one"))


class FinishedIn(_Body):
    allocation_id: str = Field(..., max_length=36)
    exit_code: int | None = Field(None, ge=-1000, le=1000)
    stopped: bool = False
    cpu_seconds: float | None = Field(None, ge=0)
    peak_memory_mib: float | None = Field(None, ge=0)
    wall_s: float | None = Field(None, ge=0)
    reason: str = Field("", max_length=1000)


class HeartbeatIn(_Body):
    running: list[str] = Field(default_factory=list, max_length=10_000)
    finished: list[FinishedIn] = Field(default_factory=list, max_length=10_000)
    epoch: int | None = Field(None, ge=0, le=2**63 - 1, description=(
        "the epoch of the desired state the agent holds; when it is still current and the heartbeat changes "
        "nothing, the answer says `unchanged` and carries no run and stop lists"))


class GangItem(BaseModel):
    engine: str
    size: int
    rank: int = Field(..., description="0 = the head, where the job's command runs")
    head_address: str
    head_port: int | None
    bind_address: str = Field(..., description="this node's address on its network label")
    port_base: int | None
    port_count: int
    auth_token: str | None = Field(None, description="shared by the gang's nodes for this attempt only")


class RunItem(BaseModel):
    allocation_id: str
    job_id: str
    name: str
    image: str | None = None
    command: list[str]
    env: dict[str, str]
    files: dict[str, str]
    gpu_indices: list[int]
    gpu_share_milli: int
    cpu_milli: int
    memory_mib: int
    gang: GangItem | None = Field(None, description="for a multi-node job: this task's place in its gang")


class StopItem(BaseModel):
    allocation_id: str
    grace_s: float
    reason: str


class HeartbeatOut(BaseModel):
    node_state: str
    epoch: int = Field(..., description="fencing token: an agent ignores answers older than the newest it saw")
    run: list[RunItem]
    stop: list[StopItem]
    verify: dict[str, Any] | None = Field(None, description="a proof-of-hardware challenge to run, if any")
    unchanged: bool = Field(False, description="the desired state of `epoch` still holds: keep to it")


class LogChunkIn(_Body):
    stream: str = Field(..., pattern="^(stdout|stderr)$")
    offset: int = Field(..., ge=0, le=2**63 - 1)  # a BIGINT column
    data: str


class LogUploadIn(_Body):
    chunks: list[LogChunkIn] = Field(..., max_length=1000)


class LogUploadOut(BaseModel):
    accepted: int
    duplicates: int
    truncated: bool


class HealthOut(BaseModel):
    status: str
    database: str
    scheduler_last_round_at: float | None


class ErrorOut(BaseModel):
    detail: str


class FieldErrorOut(BaseModel):
    path: str
    reason: str


class ValidationErrorOut(ErrorOut):
    errors: list[FieldErrorOut]


# Every error answer of the API (errors.py and the body-size middleware in app.py make them), for the routers'
# `responses=` so the OpenAPI schema documents what the server really answers; pick them with `responses()`.
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a body that cannot be parsed, or a request that cannot be carried out"},
    401: {"model": ErrorOut, "description": "missing, invalid or revoked bearer token"},
    403: {"model": ErrorOut, "description": "the token's kind or scope does not allow this"},
    404: {"model": ErrorOut, "description": "no such object, or one the caller may not see"},
    409: {"model": ErrorOut, "description": "conflicts with the current state"},
    413: {"model": ErrorOut, "description": "request body or log chunk over the server's limit"},
    422: {"model": ValidationErrorOut, "description": "invalid input: each error's field path and reason"},
    429: {"model": ErrorOut, "description": "over this caller's rate limit; Retry-After says when to retry"},
    503: {"model": ErrorOut, "description": "the database is unavailable; retry shortly"},
}
# what any operation behind a bearer token may answer
COMMON_ERRORS = (401, 413, 422, 429, 503)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERROR_RESPONSES[code] for code in codes}


class AuditOut(BaseModel):
    id: int
    at: float
    actor: str
    actor_kind: str
    action: str
    status: int
    remote: str
