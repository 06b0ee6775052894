"""Every node's reliability score, from what the store already holds (no table of its own).

Three reads per call, whatever the number of nodes: the nodes (state, registration, proof-of-hardware
verdict), their state changes inside the window, and the attempts that ended inside it. The pure model is
`ceti.fabric.reliability`; this module only turns rows into its inputs.

The state of a node at the start of the window comes from its first change inside the window (the state it
left), or, with no change inside, from its state now; a node registered inside the window is unknown before
its registration.
"""

from __future__ import annotations

import os
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti.fabric import reliability as rel
from ceti.spec import AllocationState
from ceti.store import models as m

STATE_EVENTS = ("node_state", "node_registered")
# attempts that end for reasons of their own (exit, stop on request); `lost` ends with its node
_CLEAN = (AllocationState.exited.value, AllocationState.stopped.value)
_NODE = (AllocationState.lost.value,)
_MAX_IDS_IN_QUERY = 500


def window_s() -> float:
    """The rolling window the score looks back over: CETI_RELIABILITY_WINDOW_S, seven days by default."""
    return float(os.environ.get("CETI_RELIABILITY_WINDOW_S", rel.DEFAULT_WINDOW_S))


def node_reliability(
    s: Session, now: float, window: float | None = None, node_ids: list[str] | None = None
) -> dict[str, rel.Reliability]:
    """node id -> its score over the `window` seconds before `now` (all nodes, or those in `node_ids`)."""
    window = window_s() if window is None else window
    start = now - window
    if node_ids is not None and len(node_ids) > _MAX_IDS_IN_QUERY:
        node_ids_set: set[str] | None = set(node_ids)
        node_ids = None  # too many to name in a query: read all, keep the wanted ones
    else:
        node_ids_set = None
    q = select(m.Node.id, m.Node.state, m.Node.registered_at, m.Node.verdict)
    if node_ids is not None:
        q = q.where(m.Node.id.in_(node_ids))
    nodes = [row for row in s.execute(q) if node_ids_set is None or row[0] in node_ids_set]
    if not nodes:
        return {}
    wanted = {row[0] for row in nodes}

    changes: dict[str, list[tuple[float, str | None, str | None]]] = defaultdict(list)
    eq = (
        select(m.Event.node_id, m.Event.at, m.Event.from_state, m.Event.to_state)
        .where(m.Event.kind.in_(STATE_EVENTS), m.Event.at >= start, m.Event.at <= now,
               m.Event.node_id.is_not(None))
        .order_by(m.Event.node_id, m.Event.at, m.Event.id)
    )
    if node_ids is not None:
        eq = eq.where(m.Event.node_id.in_(node_ids))
    for node_id, at, from_state, to_state in s.execute(eq):
        if node_id in wanted:
            changes[node_id].append((at, from_state, to_state))

    attempts: dict[str, list[rel.Attempt]] = defaultdict(list)
    a = m.Allocation
    aq = select(a.node_id, a.state, a.started_at, a.ended_at).where(
        a.ended_at.is_not(None), a.ended_at >= start, a.ended_at <= now, a.state.in_(_CLEAN + _NODE)
    )
    if node_ids is not None:
        aq = aq.where(a.node_id.in_(node_ids))
    for node_id, state, started_at, ended_at in s.execute(aq):
        if node_id in wanted:
            attempts[node_id].append(rel.Attempt(started_at, ended_at, rel.NODE if state in _NODE else rel.CLEAN))

    out: dict[str, rel.Reliability] = {}
    for node_id, state, registered_at, verdict in nodes:
        out[node_id] = rel.assess(
            _transitions(changes.get(node_id, []), state, registered_at, start),
            attempts.get(node_id, []),
            verdict,
            now,
            window,
        )
    return out


def scores(s: Session, now: float, window: float | None = None) -> dict[str, float]:
    """node id -> score, for the scheduler: a node with no history has the prior's."""
    return {node_id: r.score for node_id, r in node_reliability(s, now, window).items()}


def _transitions(
    changes: list[tuple[float, str | None, str | None]], state_now: str, registered_at: float, start: float
) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    if registered_at < start:
        before = changes[0][1] if changes and changes[0][1] else state_now
        if before in (rel.ONLINE, rel.LOST):
            out.append((start, before))
    out.extend((at, to) for at, _, to in changes if to in (rel.ONLINE, rel.LOST))
    return out
