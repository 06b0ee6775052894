"""The baseline the core is measured against: per job, in queue order, scan the nodes and take the first fit.

This is what a scheduler without classes does (O(jobs x nodes) in the worst case). It honours the same hard
constraints (regions, node ids, models, VRAM, bid, schedulable, gangs all-or-nothing) but knows nothing of
cost, speed, reliability or pre-emption. `max_jobs` lets a benchmark time a prefix of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from ceti.fabric.decisions import Decisions, Start, Wait
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job, Node, Snapshot


@dataclass(slots=True)
class _Free:
    node: Node
    cpu_milli: int
    memory_mib: int
    disk_mib: int
    gpu_free: list[int]  # by position in node.gpus


def _free(snapshot: Snapshot) -> list[_Free]:
    free = {
        n.id: _Free(n, n.cpu_milli, n.memory_mib, n.disk_mib, [WHOLE_GPU_MILLI] * len(n.gpus))
        for n in snapshot.nodes
    }
    for a in snapshot.running:
        f = free.get(a.node_id)
        if f is None:
            continue
        f.cpu_milli -= a.cpu_milli
        f.memory_mib -= a.memory_mib
        f.disk_mib -= a.disk_mib
        pos = {g.index: p for p, g in enumerate(f.node.gpus)}
        for i in a.gpu_indices:
            if i in pos:
                f.gpu_free[pos[i]] -= a.gpu_milli_per_gpu
    return [free[k] for k in sorted(free)]


def _gpus(f: _Free, d: Demand) -> list[int] | None:
    if not d.gpu_count:
        return []
    need = d.gpu_milli_per_gpu
    out = []
    for p, g in enumerate(f.node.gpus):
        if (
            f.gpu_free[p] >= need
            and (not d.gpu_models or g.model in d.gpu_models)
            and g.vram_mib >= d.min_vram_mib
        ):
            out.append(p)
            if len(out) == d.gpu_count:
                return out
    return None


def _fits(f: _Free, job: Job) -> list[int] | None:
    d = job.demand
    n = f.node
    if not n.schedulable or f.cpu_milli < d.cpu_milli or f.memory_mib < d.memory_mib:
        return None
    if d.disk_mib and f.disk_mib < d.disk_mib:
        return None
    if d.regions and n.region not in d.regions:
        return None
    if d.node_ids and n.id not in d.node_ids:
        return None
    if d.features and not d.features <= n.features:
        return None
    if job.bid_per_hour is not None:
        price = d.gpu_count * n.price_per_gpu_hour + d.cpu_milli / 1000.0 * n.price_per_cpu_hour
        if price * job.gang_size > job.bid_per_hour + 1e-9:
            return None
    return _gpus(f, d)


def _take(f: _Free, d: Demand, gpus: list[int], sign: int = 1) -> None:
    f.cpu_milli -= sign * d.cpu_milli
    f.memory_mib -= sign * d.memory_mib
    f.disk_mib -= sign * d.disk_mib
    for p in gpus:
        f.gpu_free[p] -= sign * d.gpu_milli_per_gpu


def schedule_first_fit(snapshot: Snapshot, max_jobs: int | None = None) -> Decisions:
    """First fit per job over nodes in id order; the first `max_jobs` jobs of the queue only, if given."""
    decisions = Decisions()
    nodes = _free(snapshot)
    queue = sorted(snapshot.pending, key=lambda j: (-j.priority, j.order, j.id))
    if max_jobs is not None:
        queue = queue[:max_jobs]
    for job in queue:
        d = job.demand
        placed: list[tuple[_Free, list[int]]] = []
        for _ in range(max(1, job.gang_size)):
            for f in nodes:
                gpus = _fits(f, job)
                if gpus is not None:
                    _take(f, d, gpus)
                    placed.append((f, gpus))
                    break
            else:
                break
        if len(placed) < max(1, job.gang_size):
            for f, gpus in placed:
                _take(f, d, gpus, -1)
            decisions.waiting.append(Wait(job.id, "no node fits now"))
            continue
        for task, (f, gpus) in enumerate(placed):
            idx = tuple(sorted(f.node.gpus[p].index for p in gpus))
            decisions.starts.append(Start(job.id, f.node.id, idx, d.gpu_share_milli, task))
    return decisions
