"""Back-fill: idle capacity earns from decentralized networks until a developer pays for it.

Each round, before the fabric schedules, every online node that allows networks (`ceti agent --networks ...`) and
holds no work gets the best-paying workload among the networks the operator configured, when it pays at least
the provider's floor and the network still has a free slot (a miner hotkey, a queued render job). The workload is
an ordinary job: interruptible, priority 10 (below every developer default), pinned to that node, with
`FABRIC_NETWORK` and `FABRIC_NETWORK_SLOT` in its environment. So the fabric itself makes it yield: a developer job
that needs the node pre-empts it (SIGTERM and the grace period), and it returns to the queue, pinned, until the
node is free again.

Estimates are cached per (network, kind of node) for `estimate_ttl_s`, because reading a chain's metagraph per
node per round would cost more than the work earns. A network whose estimate fails (price feed down, chain
unreachable) is skipped for the round, with the reason logged and counted; nothing half-made is left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti.networks.base import (
    NETWORK_ENV,
    REVENUE_ENV,
    NetworkAdapter,
    NetworkError,
    NodeClass,
    RevenueEstimate,
)
from ceti.server.services import jobs as job_service
from ceti.server.services.events import record
from ceti.server.services.tokens import Principal, ensure_project
from ceti.spec import AllocationState, JobSpec, JobState, NodeInfo
from ceti.store import models as m

log = logging.getLogger("ceti.server.backfill")
NETWORKS_PROJECT = "fabric-networks"
SLOT_ENV = "FABRIC_NETWORK_SLOT"
ACTIVE_JOB_STATES = [JobState.pending.value, JobState.starting.value, JobState.running.value]
ACTIVE_ALLOCATIONS = [s.value for s in AllocationState if s.active]


@dataclass
class BackfillReport:
    submitted: list[tuple[str, str, float]] = field(default_factory=list)  # (node id, network, USD per hour)
    failures: dict[str, str] = field(default_factory=dict)  # network -> why it gave no estimate this round


class EstimateCache:
    """Revenue estimates per (network, node class), kept `ttl_s` seconds of the server clock."""

    def __init__(self, ttl_s: float = 300.0):
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, NodeClass], tuple[float, list[RevenueEstimate]]] = {}

    def get(self, adapter: NetworkAdapter, node: NodeClass, now: float) -> list[RevenueEstimate]:
        key = (adapter.name, node)
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = adapter.estimate_revenue(node)
        self._entries[key] = (now, value)
        return value


def node_class(info: NodeInfo) -> NodeClass:
    gpus = info.gpus
    return NodeClass(
        gpu_model=gpus[0].model if gpus else None,
        gpu_count=len(gpus),
        vram_mib=min((g.vram_mib for g in gpus), default=0),
        cpus=info.cpus,
        memory_mib=info.memory_mib,
        region=info.region,
        floor_price_per_hour=info.network_floor_usd_per_hour,
    )


def backfill_idle_nodes(
    s: Session, adapters: Mapping[str, NetworkAdapter], now: float, cache: EstimateCache, max_per_round: int = 100
) -> BackfillReport:
    report = BackfillReport()
    if not adapters:
        return report
    project = ensure_project(s, NETWORKS_PROJECT, now)
    held_nodes: set[str] = set()
    used_slots: dict[str, set[int]] = {name: set() for name in adapters}
    for (spec,) in s.execute(
        select(m.Job.spec).where(m.Job.project_id == project.id, m.Job.state.in_(ACTIVE_JOB_STATES))
    ):
        held_nodes.update((spec.get("placement") or {}).get("nodes") or [])
        env = spec.get("env") or {}
        if env.get(NETWORK_ENV) in used_slots and str(env.get(SLOT_ENV, "")).isdigit():
            used_slots[env[NETWORK_ENV]].add(int(env[SLOT_ENV]))
    busy = set(s.scalars(select(m.Allocation.node_id).where(m.Allocation.state.in_(ACTIVE_ALLOCATIONS))))
    who = Principal(token_id="fabric-backfill", kind="project", project_id=project.id)
    for node_id, info_json in s.execute(
        select(m.Node.id, m.Node.info).where(m.Node.state == "online").order_by(m.Node.id)
    ):
        if len(report.submitted) >= max_per_round:
            break
        if node_id in busy or node_id in held_nodes:
            continue
        info = NodeInfo.model_validate(info_json)
        allowed = [name for name in info.networks if name in adapters and name not in report.failures]
        if not allowed:
            continue
        nc = node_class(info)
        best: tuple[RevenueEstimate, str, int] | None = None
        for name in allowed:
            adapter = adapters[name]
            slot = _free_slot(adapter, used_slots[name])
            if slot is None:
                continue
            try:
                estimates = cache.get(adapter, nc, now)
            except NetworkError as exc:
                report.failures[name] = str(exc)
                log.warning("no %s estimate this round: %s", name, exc)
                continue
            for est in estimates:
                if est.usd_per_hour >= nc.floor_price_per_hour and (best is None or est.usd_per_hour > best[0].usd_per_hour):
                    best = (est, name, slot)
                    break  # estimates come best first
        if best is None:
            continue
        est, name, slot = best
        try:
            spec = adapters[name].workload_for_slot(nc, est, slot)
        except NetworkError as exc:
            report.failures[name] = str(exc)
            continue
        spec = _pinned(spec, node_id, name, slot, est.usd_per_hour)
        job, _ = job_service.submit(s, who, spec, now, idempotency_key=None, max_active_jobs=1_000_000)
        record(s, "backfill", now, f"{name} {est.target} at ${est.usd_per_hour:.4f}/h: {est.detail}"[:500],
               job_id=job.id, node_id=node_id)
        used_slots[name].add(slot)
        held_nodes.add(node_id)
        report.submitted.append((node_id, name, est.usd_per_hour))
    return report


def _free_slot(adapter: NetworkAdapter, used: set[int]) -> int | None:
    for slot in range(adapter.capacity()):
        if slot not in used:
            return slot
    return None


def _pinned(spec: JobSpec, node_id: str, network: str, slot: int, usd_per_hour: float) -> JobSpec:
    """The network's workload, held to this node and tagged so the control plane knows whose slot it fills and
    what it earns (the ledger books that as the network's payment)."""
    doc = spec.model_dump(mode="json")
    doc["env"] = {**doc["env"], NETWORK_ENV: network, SLOT_ENV: str(slot), REVENUE_ENV: f"{usd_per_hour:.6f}"}
    doc["placement"] = {**doc["placement"], "nodes": [node_id], "verified": False}
    doc["interruptible"] = True
    return JobSpec.model_validate(doc)
