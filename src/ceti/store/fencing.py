"""Every change of what should run on a node bumps that node's epoch, in the same transaction.

Doing it here, on flush, rather than at each place that changes an allocation means no code path can forget:
a new allocation, a stop request, a lost or ended attempt all move the epoch. The increment is written as
`epoch = epoch + 1` so concurrent transactions on PostgreSQL serialise on the row instead of losing a bump.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import event, inspect, update
from sqlalchemy.orm import Session

from ceti.store import models as m


def _changed_nodes(session: Session) -> set[str]:
    nodes: set[str] = set()
    for obj in session.new:
        if isinstance(obj, m.Allocation):
            nodes.add(obj.node_id)
    for obj in session.dirty:
        attrs = inspect(obj).attrs if isinstance(obj, m.Allocation) else None
        if attrs is not None and (attrs.state.history.has_changes() or attrs.stop_reason.history.has_changes()):
            nodes.add(obj.node_id)
    return nodes


def bump_epochs(session: Session, nodes: Iterable[str]) -> None:
    """For a change the flush does not see: allocations written with a set-based UPDATE."""
    session.execute(
        update(m.Node)
        .where(m.Node.id.in_(sorted(set(nodes))))
        .values(epoch=m.Node.epoch + 1)
        .execution_options(synchronize_session=False)
    )


@event.listens_for(Session, "before_flush")
def _bump_epochs(session: Session, _ctx, _instances) -> None:
    nodes = _changed_nodes(session)
    if nodes:
        bump_epochs(session, nodes)
