"""Job state changes always go through here, so every one is recorded with a time and a reason."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ceti.spec import JobState
from ceti.store import models as m


def record(
    s: Session,
    kind: str,
    now: float,
    reason: str = "",
    job_id: str | None = None,
    node_id: str | None = None,
    allocation_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
) -> None:
    s.add(
        m.Event(
            job_id=job_id,
            node_id=node_id,
            allocation_id=allocation_id,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            reason=reason[:4000],
            at=now,
        )
    )


def set_job_state(
    s: Session, job: m.Job, state: JobState, reason: str, now: float, node_id: str | None = None,
    allocation_id: str | None = None,
) -> None:
    old = job.state
    job.state = state.value
    job.reason = reason
    job.updated_at = now
    if state.finished:
        job.finished_at = now
    record(s, "job_state", now, reason, job_id=job.id, node_id=node_id, allocation_id=allocation_id,
           from_state=old, to_state=state.value)
