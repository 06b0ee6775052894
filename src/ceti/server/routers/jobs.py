from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from sqlalchemy.orm import Session

from ceti.server import schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.faults import crash_point
from ceti.server.services import jobs as svc
from ceti.server.services.tokens import Principal
from ceti.spec import AllocationState, JobState, parse_job_spec
from ceti.store import models as m

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=schemas.responses(*schemas.COMMON_ERRORS))


def job_out(job: m.Job, allocations: list[m.Allocation] | None = None) -> dict[str, Any]:
    live = [a for a in allocations or [] if AllocationState(a.state).active]
    node_id = (live or allocations or [None])[-1]
    out = {c: getattr(job, c) for c in schemas.JobOut.model_fields if hasattr(job, c)}
    out["node_id"] = node_id.node_id if node_id is not None else None
    return out


@router.post("", status_code=201, response_model=schemas.JobOut, responses={
    200: {"model": schemas.JobOut, "description": "the job an earlier submit with this Idempotency-Key made"},
    **schemas.responses(400, 403, 409),
})
def submit(
    request: Request,
    response: Response,
    s: SessionDep,
    who: PrincipalDep,
    spec: Annotated[dict[str, Any], Body(description="a JobSpec")],
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
):
    out, created = submit_reply(s, who, spec, idempotency_key, request.app.state)
    if not created:
        response.status_code = 200
    return out


def submit_reply(s: Session, who: Principal, spec: dict[str, Any], idempotency_key: str | None,
                 state: Any) -> tuple[dict[str, Any], bool]:
    """The submit, shared with the fast lane (server/fastlane.py): the job's JSON form and whether it is new."""
    parsed = parse_job_spec(spec)
    job, created = svc.submit(s, who, parsed, time.time(), idempotency_key, state.settings.max_jobs_per_project)
    s.commit()
    crash_point("submit_after_commit")
    return job_out(job), created


@router.get("", response_model=list[schemas.JobOut], responses=schemas.responses(403))
def list_jobs(
    s: SessionDep,
    who: PrincipalDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    jobs = svc.list_jobs(s, who, state.value if state else None, limit)
    return [job_out(j, svc.allocations_of(s, j.id)) for j in jobs]


@router.get("/{job_id}", response_model=schemas.JobDetailOut, responses=schemas.responses(404, 409))
def get_job(job_id: str, s: SessionDep, who: PrincipalDep):
    job = svc.get_visible(s, who, job_id)
    allocs = svc.allocations_of(s, job.id)
    out = job_out(job, allocs)
    out["allocations"] = [
        {c: getattr(a, c) for c in schemas.AllocationOut.model_fields} for a in allocs
    ]
    return out


@router.post("/{job_id}/cancel", response_model=schemas.JobOut, responses=schemas.responses(404, 409))
def cancel(job_id: str, s: SessionDep, who: PrincipalDep):
    job = svc.cancel(s, who, job_id, time.time())
    s.commit()
    return job_out(job, svc.allocations_of(s, job.id))


@router.get("/{job_id}/events", response_model=list[schemas.EventOut], responses=schemas.responses(404, 409))
def events(job_id: str, s: SessionDep, who: PrincipalDep):
    return [{c: getattr(e, c) for c in schemas.EventOut.model_fields} for e in svc.events_of(s, who, job_id)]


@router.get("/{job_id}/logs", response_model=schemas.LogsOut, responses=schemas.responses(404, 409))
def logs(
    job_id: str,
    s: SessionDep,
    who: PrincipalDep,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    job, chunks = svc.logs_of(s, who, job_id, after_id, limit)
    return {
        "chunks": [{c: getattr(ch, c) for c in schemas.LogChunkOut.model_fields} for ch in chunks],
        "next_after_id": chunks[-1].id if chunks else after_id,
        "truncated": job.log_truncated,
        "finished": JobState(job.state).finished,
    }
