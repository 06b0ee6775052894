"""Multi-node jobs on the server: the ports each task's engine may use on its node, and what an agent is told
about the rest of its gang (where the head listens)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti import fabric
from ceti.server.settings import Settings
from ceti.spec import AllocationState
from ceti.store import models as m

ACTIVE = [st.value for st in AllocationState if st.active]


GANG_PORT_BLOCK = 64  # ports one task of a multi-node job holds on its node (its engine's listeners and workers)


class GangPorts:
    """Blocks of ports for the tasks of multi-node jobs this round, each from its node's declared range and
    clear of the blocks that live allocations there hold. A gang gets all its blocks or none."""

    def __init__(self, s: Session, snapshot: fabric.Snapshot, decisions: fabric.Decisions) -> None:
        multi = {j.id for j in snapshot.pending if j.one_per_node}
        self.gangs: dict[str, list[fabric.Start]] = {}
        for st in decisions.starts:
            if st.job_id in multi:
                self.gangs.setdefault(st.job_id, []).append(st)
        self._given: dict[tuple[str, int], int] = {}
        self._used: dict[str, set[int]] = {}
        self._ranges: dict[str, tuple[int, int]] = {}
        if not self.gangs:
            return
        node_ids = sorted({st.node_id for sts in self.gangs.values() for st in sts})
        for node_id, port in s.execute(select(m.Allocation.node_id, m.Allocation.port_base).where(
                m.Allocation.node_id.in_(node_ids), m.Allocation.state.in_(ACTIVE),
                m.Allocation.port_base.is_not(None))):
            self._used.setdefault(node_id, set()).add(port)
        for node_id, info in s.execute(select(m.Node.id, m.Node.info).where(m.Node.id.in_(node_ids))):
            self._ranges[node_id] = (int(info.get("gang_port_min", 47000)), int(info.get("gang_port_max", 47999)))

    def reserve(self, job_id: str) -> bool:
        picked: list[tuple[tuple[str, int], int]] = []
        for st in self.gangs[job_id]:
            low, high = self._ranges.get(st.node_id, (47000, 47999))
            used = self._used.setdefault(st.node_id, set())
            base = next((p for p in range(low, high - GANG_PORT_BLOCK + 2, GANG_PORT_BLOCK) if p not in used), None)
            if base is None:
                for (node_id, _), p in picked:
                    self._used[node_id].discard(p)
                return False
            used.add(base)
            picked.append(((st.node_id, st.task_index), base))
        for (node_id, task), base in picked:
            self._given[(job_id, task)] = base
        return True

    def port_of(self, job_id: str, task_index: int) -> int | None:
        return self._given.get((job_id, task_index))


def gang_of(s: Session, alloc: m.Allocation, spec: dict[str, Any], node_info: dict[str, Any],
            settings: Settings) -> dict[str, Any]:
    """The `gang` part of a desired allocation: the engine, this task's rank and ports, the head's address, and a
    token the gang's nodes (and only they) share for the attempt, so that reaching an engine's port is not enough
    to use it."""
    if alloc.task_index == 0:
        head_port, head_info = alloc.port_base, node_info
    else:
        row = s.execute(select(m.Allocation.port_base, m.Node.info).join(m.Node, m.Node.id == m.Allocation.node_id)
                        .where(m.Allocation.job_id == alloc.job_id, m.Allocation.attempt == alloc.attempt,
                               m.Allocation.task_index == 0)).first()
        head_port, head_info = (row[0], row[1]) if row is not None else (None, {})
    return {
        "engine": spec["engine"],
        "size": spec.get("nodes", 1),
        "rank": alloc.task_index,
        "head_address": head_info.get("network_address") or "127.0.0.1",
        "head_port": head_port,
        "bind_address": node_info.get("network_address") or "127.0.0.1",
        "port_base": alloc.port_base,
        "port_count": GANG_PORT_BLOCK,
        "auth_token": settings.secret_box().derive(f"gang:{alloc.job_id}:{alloc.attempt}"),
    }
