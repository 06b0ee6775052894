"""The web dashboard: its page and assets (`/ui`), and the JSON it reads (`/v1/dashboard/...`).

The page holds a token in the browser's session storage and calls the JSON endpoints with it, so every figure it
shows is scoped exactly as the REST API is (see `services/dashboard.py`). Its scripts come from this package and
from installed packages (plotly.js from the `plotly` wheel): the dashboard works without internet access.
"""

from __future__ import annotations

import time
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from ceti.server import schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.errors import NotFound
from ceti.server.services import dashboard as svc
from ceti.spec import JobState

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"], responses=schemas.responses(*schemas.COMMON_ERRORS))


# -- response bodies ----------------------------------------------------------------------------------


class Viewer(BaseModel):
    kind: str = Field(..., description="admin, project or provider")
    project_id: str | None
    provider_id: str | None


class RegionOut(BaseModel):
    region: str
    label: str
    lat: float | None = Field(None, description="None when the region has no known coordinates")
    lon: float | None
    placed: bool
    online: int
    lost: int
    gpus: int
    nodes: list[str] = Field(..., description="host names")


class ModelUseOut(BaseModel):
    model: str
    total: int
    uses: dict[str, int] = Field(..., description="idle / developer / network name -> GPUs")


class UtilizationPoint(BaseModel):
    at: float
    developer: float = Field(..., description="GPUs busy with developer work")
    network: float = Field(..., description="GPUs busy with decentralized-network work")
    total: int = Field(..., description="GPUs of the network today")


class OverviewOut(BaseModel):
    viewer: Viewer
    nodes_online: int
    nodes_lost: int
    gpus_total: int
    cpus_total: int
    regions: list[RegionOut]
    gpus_by_model: list[ModelUseOut]
    gpu_use: dict[str, int] = Field(..., description="idle / developer / network name -> GPUs, now")
    jobs_by_state: dict[str, int] | None = Field(None, description="None for provider tokens (they see no jobs)")
    networks: list[str] = Field(..., description="networks a job can name with FABRIC_NETWORK in its env")
    utilization: list[UtilizationPoint]
    now: float


class JobRowOut(BaseModel):
    id: str
    name: str
    project_id: str
    state: str
    reason: str
    priority: int
    kind: str = Field(..., description="developer, or the network the job works for")
    node_id: str | None
    hostname: str | None
    region: str | None
    gpu: str
    runtime_s: float
    cost_estimate: float = Field(..., description="at the nodes' asks; an estimate until the ledger exists")
    attempts: int
    exit_code: int | None
    created_at: float
    finished_at: float | None


class JobAttemptOut(BaseModel):
    id: str
    node_id: str
    hostname: str | None
    attempt: int
    state: str
    gpu: str
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    stop_reason: str
    runtime_s: float
    cost_estimate: float


class JobEventOut(BaseModel):
    id: int
    at: float
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str
    node_id: str | None


class JobPageOut(JobRowOut):
    spec: dict[str, Any] = Field(..., description="the spec, with file names instead of file bodies")
    allocations: list[JobAttemptOut]
    events: list[JobEventOut]
    log_bytes: int
    log_truncated: bool
    finished: bool


class LogPieceOut(BaseModel):
    id: int
    stream: str
    data: str


class JobLogsOut(BaseModel):
    chunks: list[LogPieceOut]
    next_after_id: int
    truncated: bool
    finished: bool


class NodeRowOut(BaseModel):
    id: str
    hostname: str
    region: str
    state: str
    cpus: int
    memory_mib: int
    disk_mib: int
    gpus: str
    gpu_count: int
    gpu_use: dict[str, int]
    price_per_gpu_hour: float
    price_per_cpu_hour: float
    heartbeat_age_s: float
    registered_at: float
    active_allocations: int
    reliability: str | float = Field(..., description="probability an hour of work placed here finishes; "
                                     "'not measured yet' without history")
    earnings: str | float = Field(..., description="USD the ledger credited the provider for work on this node")


class GpuOut(BaseModel):
    index: int
    model: str
    vram_mib: int


class HardwareOut(BaseModel):
    cpus: int | None
    memory_mib: int | None
    disk_mib: int | None
    gpu_driver: str | None
    os: str
    agent_version: str
    gpus: list[GpuOut]


class GpuNowOut(BaseModel):
    index: int
    model: str
    use: str
    job_id: str | None = Field(None, description="shown only for jobs the caller may see")


class WorkOut(BaseModel):
    allocation_id: str | None
    job_id: str | None
    name: str
    state: str
    kind: str
    gpu_indices: list[int]
    started_at: float | None


class NodeEventOut(BaseModel):
    at: float
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str


class NodePageOut(NodeRowOut):
    hardware: HardwareOut
    gpu_detail: list[GpuNowOut]
    current_work: list[WorkOut]
    events: list[NodeEventOut]


class PendingReasonOut(BaseModel):
    reason: str
    jobs: int


class PreemptionBucketOut(BaseModel):
    at: float = Field(..., description="end of the bucket")
    count: int


class SchedulerPageOut(BaseModel):
    rounds: int
    last_round_at: float | None
    last_round_s: float | None
    last_error: str | None = Field(None, description="shown to admin tokens only")
    recent_round_s: list[float]
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    pending_by_reason: list[PendingReasonOut]
    preemptions: list[PreemptionBucketOut]
    preemptions_in_window: int
    jobs_visible: bool


# -- JSON endpoints -----------------------------------------------------------------------------------


@router.get("/overview", response_model=OverviewOut)
def overview(s: SessionDep, who: PrincipalDep):
    """Nodes by region, GPUs by model and what each is doing, jobs by state, utilization over the last 30 min."""
    return svc.overview(s, who, time.time())


@router.get("/jobs", response_model=list[JobRowOut], responses=schemas.responses(403))
def jobs(
    s: SessionDep,
    who: PrincipalDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
):
    """The jobs the caller may see, newest first, with node, region, GPU, runtime and estimated cost."""
    return svc.job_rows(s, who, state.value if state else None, limit, time.time())


@router.get("/jobs/{job_id}", response_model=JobPageOut, responses=schemas.responses(403, 404, 409))
def job(job_id: str, s: SessionDep, who: PrincipalDep):
    """One job with its attempts and events (another project's job is not found)."""
    return svc.job_detail(s, who, job_id, time.time())


@router.get("/jobs/{job_id}/logs", response_model=JobLogsOut, responses=schemas.responses(403, 404, 409))
def job_logs(
    job_id: str,
    s: SessionDep,
    who: PrincipalDep,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    """The job's output after `after_id`; poll with `next_after_id` for live logs."""
    return svc.job_logs(s, who, job_id, after_id, limit)


@router.get("/nodes", response_model=list[NodeRowOut])
def nodes(s: SessionDep, who: PrincipalDep):
    """Nodes the caller may see (a provider token: its own), with GPU use and heartbeat age."""
    return svc.node_rows(s, who, time.time())


@router.get("/nodes/{node_id}", response_model=NodePageOut, responses=schemas.responses(404))
def node(node_id: str, s: SessionDep, who: PrincipalDep):
    """One node: hardware, heartbeat age, what each GPU is doing, current work and recent node events."""
    return svc.node_detail(s, who, node_id, time.time())


@router.get("/scheduler", response_model=SchedulerPageOut)
def scheduler(request: Request, s: SessionDep, who: PrincipalDep):
    """Round latency of this replica's loop, pending jobs by reason and pre-emptions over the last hour."""
    return svc.scheduler_view(s, who, getattr(request.app.state, "scheduler", None), time.time())


# -- the page and its assets --------------------------------------------------------------------------

pages = APIRouter(include_in_schema=False)
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
# the page loads only our own files and plotly.js, all from this server; nothing else may run or be fetched
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@lru_cache(maxsize=8)
def _asset(name: str) -> bytes:
    return resources.files("ceti.server.dashboard").joinpath(name).read_bytes()


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.js as the installed `plotly` package ships it."""
    try:
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise NotFound("plotly.js is not installed: pip install plotly") from exc


@pages.get("/")
def root():
    return RedirectResponse("/ui/", status_code=307)


@pages.get("/ui")
def ui_redirect():
    return RedirectResponse("/ui/", status_code=307)


@pages.get("/ui/")
def ui_page():
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@pages.get("/ui/assets/{name}")
def ui_asset(name: str):
    if name not in ASSETS:
        raise NotFound(f"no asset {name}")
    return Response(_asset(name), media_type=ASSETS[name], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@pages.get("/ui/vendor/plotly.min.js")
def ui_plotly():
    return Response(plotly_js(), media_type="text/javascript",
                    headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"})
