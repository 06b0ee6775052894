"""Jobs as developers see them: submit, list, inspect, cancel, read logs and events."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ceti.server.errors import BadRequest, Conflict, Forbidden, NotFound
from ceti.server.services import ledger, secrets
from ceti.server.services.claims import lock_rows
from ceti.server.services.events import record, set_job_state
from ceti.server.services.tokens import DEFAULT_PROJECT, Principal, ensure_project, new_id
from ceti.spec import AllocationState, JobSpec, JobState
from ceti.store import models as m

ACTIVE_ALLOCATION_STATES = [s.value for s in AllocationState if s.active]


def project_for_submit(s: Session, who: Principal, now: float) -> str:
    if who.kind == "project" and who.project_id:
        return who.project_id
    if who.is_admin:
        return ensure_project(s, DEFAULT_PROJECT, now).id
    raise Forbidden("only project and admin tokens can submit jobs")


def submit(
    s: Session, who: Principal, spec: JobSpec, now: float, idempotency_key: str | None, max_active_jobs: int
) -> tuple[m.Job, bool]:
    """Create a job; with an idempotency key, a retried submit returns the first job (created=False)."""
    project_id = project_for_submit(s, who, now)
    if idempotency_key:
        existing = s.scalar(
            select(m.Job).where(m.Job.project_id == project_id, m.Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            if existing.spec != spec.model_dump(mode="json"):
                raise Conflict("this idempotency key was used for a different job spec")
            return existing, False
    absent = secrets.missing(s, project_id, spec.secrets)
    if absent:
        raise BadRequest(f"unknown secret(s) {', '.join(absent)}: set them with `ceti secret set NAME`")
    active = s.scalar(
        select(func.count()).select_from(m.Job).where(
            m.Job.project_id == project_id, m.Job.state.in_(["pending", "starting", "running"])
        )
    )
    if active >= max_active_jobs:
        raise Conflict(f"the project already has {active} active jobs (limit {max_active_jobs})")
    ledger.check_submit(s, project_id, spec)  # a budget that cannot cover the job refuses it (409)
    job = m.Job(
        id=new_id(),
        project_id=project_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        state=JobState.pending.value,
        priority=spec.priority,
        queue_order=int(now * 1_000_000),
        reason="",
        attempts=0,
        retries=0,
        idempotency_key=idempotency_key,
        log_bytes=0,
        log_chunks=0,
        log_truncated=False,
        created_at=now,
        updated_at=now,
    )
    s.add(job)
    try:
        s.flush()
    except IntegrityError:  # a concurrent submit with the same key won the race
        s.rollback()
        existing = s.scalar(
            select(m.Job).where(m.Job.project_id == project_id, m.Job.idempotency_key == idempotency_key)
        )
        if existing is None:
            raise
        return existing, False
    record(s, "job_state", now, "submitted", job_id=job.id, to_state=JobState.pending.value)
    return job, True


def get_visible(s: Session, who: Principal, job_id: str) -> m.Job:
    """A job the caller may see. Another project's job is reported as not found, so ids leak nothing."""
    job = s.get(m.Job, job_id)
    if job is None and 4 <= len(job_id) < 36:  # the short ids the CLI prints
        q = select(m.Job).where(m.Job.id.startswith(job_id, autoescape=True)).limit(2)
        if who.kind == "project":
            q = q.where(m.Job.project_id == who.project_id)
        found = s.scalars(q).all()
        if len(found) > 1:
            raise Conflict(f"{job_id!r} matches several jobs; give more of the id")
        job = found[0] if found else None
    if job is None or not can_see(who, job):
        raise NotFound(f"no job {job_id}")
    return job


def can_see(who: Principal, job: m.Job) -> bool:
    return who.is_admin or (who.kind == "project" and job.project_id == who.project_id)


def list_jobs(s: Session, who: Principal, state: str | None, limit: int) -> list[m.Job]:
    q = select(m.Job).order_by(m.Job.created_at.desc()).limit(limit)
    if who.kind == "project":
        q = q.where(m.Job.project_id == who.project_id)
    elif not who.is_admin:
        raise Forbidden("provider tokens cannot list jobs")
    if state:
        q = q.where(m.Job.state == state)
    return list(s.scalars(q))


def allocations_of(s: Session, job_id: str) -> list[m.Allocation]:
    return list(s.scalars(select(m.Allocation).where(m.Allocation.job_id == job_id).order_by(m.Allocation.created_at)))


def cancel(s: Session, who: Principal, job_id: str, now: float) -> m.Job:
    job = get_visible(s, who, job_id)
    # locked and read afresh: a round that places the job meanwhile either commits first (and its allocation
    # is found below and stopped) or waits for this cancel (and leaves the job alone)
    (job,) = lock_rows(s, m.Job, [job.id])
    state = JobState(job.state)
    if state.finished:
        return job
    live = s.scalars(
        select(m.Allocation).where(m.Allocation.job_id == job.id, m.Allocation.state.in_(ACTIVE_ALLOCATION_STATES))
    ).all()
    # a gang's earlier attempt may still be stopping; the cancel is about the current one
    live = [a for a in live if a.attempt == job.retries + 1]
    if not live:
        set_job_state(s, job, JobState.cancelled, "cancelled by the user", now)
        return job
    for alloc in live:
        # a cancel overrides a stop already under way (pre-emption, time limit): the user's word is final
        alloc.state = AllocationState.stopping.value
        alloc.stop_reason = "cancelled"
    job.reason = "cancelling: waiting for the agent to stop it"
    job.updated_at = now
    return job


def events_of(s: Session, who: Principal, job_id: str) -> list[m.Event]:
    job = get_visible(s, who, job_id)
    return list(s.scalars(select(m.Event).where(m.Event.job_id == job.id).order_by(m.Event.id)))


def logs_of(s: Session, who: Principal, job_id: str, after_id: int, limit: int) -> tuple[m.Job, list[m.LogChunk]]:
    job = get_visible(s, who, job_id)
    chunks = s.scalars(
        select(m.LogChunk)
        .where(m.LogChunk.job_id == job.id, m.LogChunk.id > after_id)
        .order_by(m.LogChunk.id)
        .limit(limit)
    ).all()
    return job, list(chunks)
