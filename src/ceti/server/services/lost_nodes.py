"""Lost-node detection: a node silent past `node_lost_after_s` is lost, and its work ends under each job's retry
policy. Every replica's sweeper runs it; nodes are shared by claiming them (services/claims.py)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from ceti.server.services import claims
from ceti.server.services.events import record, set_job_state
from ceti.server.services.lifecycle import end_attempt
from ceti.server.settings import Settings
from ceti.spec import AllocationState, JobState, RetryOn
from ceti.store import models as m

ACTIVE = [s.value for s in AllocationState if s.active]
BATCH = 100


def silent(settings: Settings, now: float) -> ColumnElement[bool]:
    return and_(m.Node.state == "online", m.Node.last_heartbeat_at < now - settings.node_lost_after_s)


def sweep(s: Session, settings: Settings, now: float, listening_since: float = 0.0, batch: int = BATCH) -> int:
    """Claim silent nodes and declare each lost in a transaction of its own; returns how many this call declared.
    Commits `s`.

    Silence only counts from `listening_since` (when this replica started): a node is not to blame for the
    heartbeats it sent while the control plane itself was down or restarting."""
    if now - listening_since < settings.node_lost_after_s:
        return 0
    lost = 0
    while (claimed := claims.claim(s, m.Node, silent(settings, now), now, settings.claim_ttl_s, batch)) is not None:
        for node_id in claimed.keys:  # key order: the scheduling round locks nodes in the same order
            # what this session read in earlier transactions may be stale: read everything afresh
            s.expire_all()
            lost += declare_lost(s, settings, claimed, node_id, now)
            s.commit()
        if len(claimed.keys) < batch:
            break
    return lost


def declare_lost(s: Session, settings: Settings, claimed: claims.Claim, node_id: str, now: float) -> bool:
    """The final write for one claimed node: under its row lock, and only while the claim is still ours and the
    node still silent (a heartbeat that arrived since the claim wins). The caller commits."""
    held = claims.still_ours(s, m.Node, claimed, [node_id])
    if not held:
        return False  # another replica took the node over after this claim expired
    node = held[0]
    if node.state != "online" or node.last_heartbeat_at >= now - settings.node_lost_after_s:
        return False
    mark_lost(s, node, now)
    return True


def mark_lost(s: Session, node: m.Node, now: float) -> None:
    """The node is lost; every attempt still live on it ends as lost. The caller holds the node's row lock, so
    no scheduling round can place new work on it before this commits (services/scheduling.py: `_apply`)."""
    node.state = "lost"
    node.lost_at = now
    silent_s = now - node.last_heartbeat_at
    record(s, "node_state", now, f"no heartbeat for {silent_s:.0f}s", node_id=node.id, from_state="online",
           to_state="lost")
    live = s.scalars(select(m.Allocation).where(m.Allocation.node_id == node.id, m.Allocation.state.in_(ACTIVE))
                     .order_by(m.Allocation.id)).all()
    for alloc in live:
        job = s.get(m.Job, alloc.job_id)
        if alloc.stop_reason == "cancelled":
            moved = end_attempt(s, job, alloc, AllocationState.lost, now, cause=None,
                                reason="node lost while cancelling")
            if moved or not JobState(job.state).finished:
                set_job_state(s, job, JobState.cancelled, "cancelled by the user", now, node.id, alloc.id)
        else:
            end_attempt(s, job, alloc, AllocationState.lost, now, cause=RetryOn.node_lost,
                        reason=f"node {node.hostname} lost")
