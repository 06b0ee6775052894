"""How an attempt ends and what that means for its job: done, failed, or retried under the job's policy."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti.server.services import ledger
from ceti.server.services.events import record, set_job_state
from ceti.spec import AllocationState, JobSpec, JobState, RetryOn
from ceti.store import models as m

ACTIVE = [st.value for st in AllocationState if st.active]


def retry_policy(job: m.Job):
    return JobSpec.model_validate(job.spec).retry


def end_attempt(
    s: Session,
    job: m.Job,
    alloc: m.Allocation,
    alloc_state: AllocationState,
    now: float,
    *,
    cause: RetryOn | None,
    exit_code: int | None = None,
    reason: str,
) -> bool:
    """Close `alloc` and move `job` on. `cause` None means the job's own end: success or a final verdict.

    A multi-node job has one allocation per node and attempt. The first of them to end decides the attempt, and
    the others are stopped ("gang ended"); when they end later, only they are closed. Returns whether this end
    moved the job."""
    alloc.state = alloc_state.value
    alloc.ended_at = now
    ledger.attempt_ended(s, alloc, alloc_state, now)  # fixes what it is charged until
    if exit_code is not None:
        alloc.exit_code = exit_code
    record(s, "allocation_ended", now, reason, job_id=job.id, node_id=alloc.node_id, allocation_id=alloc.id,
           to_state=alloc_state.value)
    if JobState(job.state).finished or alloc.attempt != job.retries + 1:
        return False  # the job ended already, or moved on to a later attempt
    if alloc.port_base is not None:  # a task of a multi-node job (they alone hold engine ports)
        _stop_rest_of_gang(s, job, alloc, now, reason)
    job.exit_code = exit_code
    if cause is None:
        final = JobState.succeeded if exit_code == 0 else JobState.failed
        set_job_state(s, job, final, reason, now, alloc.node_id, alloc.id)
        return True
    policy = retry_policy(job)
    if policy.allows(cause, exit_code) and job.retries < policy.limit:
        job.retries += 1
        # the job keeps its queue_order: a retry never falls behind newer jobs of its priority
        set_job_state(s, job, JobState.pending, f"retry {job.retries}/{policy.limit}: {reason}", now,
                      alloc.node_id, alloc.id)
        return True
    if policy.allows(cause, exit_code):
        why = f"{reason} (retry limit {policy.limit} reached)"
    else:
        why = f"{reason} (the retry policy does not retry {cause.value})"
    set_job_state(s, job, JobState.failed, why, now, alloc.node_id, alloc.id)
    return True


GANG_ENDED = "gang ended"


def _stop_rest_of_gang(s: Session, job: m.Job, alloc: m.Allocation, now: float, reason: str) -> None:
    """The other tasks of the attempt stop with it: a gang runs whole or not at all."""
    rest = s.scalars(select(m.Allocation).where(
        m.Allocation.job_id == job.id, m.Allocation.attempt == alloc.attempt, m.Allocation.id != alloc.id,
        m.Allocation.state.in_(ACTIVE))).all()
    for other in rest:
        if other.state == AllocationState.stopping.value:
            continue
        other.state = AllocationState.stopping.value
        other.stop_reason = f"{GANG_ENDED}: task {alloc.task_index} {reason}"
        record(s, "allocation_stopping", now, other.stop_reason, job_id=job.id, node_id=other.node_id,
               allocation_id=other.id)
