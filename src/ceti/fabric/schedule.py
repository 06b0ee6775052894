"""One scheduling round: snapshot in, decisions out. Pure: no I/O, no clock, no database."""

from __future__ import annotations

from dataclasses import dataclass

from ceti.fabric.decisions import Decisions, Start, Unschedulable, Wait
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job, Node, Snapshot


@dataclass(slots=True)
class _Free:
    node: Node
    cpu_milli: int
    memory_mib: int
    disk_mib: int
    gpu_free_milli: dict[int, int]  # GPU index -> free milli-GPU


def _free_capacity(snapshot: Snapshot) -> dict[str, _Free]:
    free = {
        n.id: _Free(n, n.cpu_milli, n.memory_mib, n.disk_mib, {g.index: WHOLE_GPU_MILLI for g in n.gpus})
        for n in snapshot.nodes
    }
    for a in snapshot.running:
        f = free.get(a.node_id)
        if f is None:
            continue
        f.cpu_milli -= a.cpu_milli
        f.memory_mib -= a.memory_mib
        f.disk_mib -= a.disk_mib
        for i in a.gpu_indices:
            if i in f.gpu_free_milli:
                f.gpu_free_milli[i] -= a.gpu_milli_per_gpu
    return free


def _static_misfit(node: Node, d: Demand) -> str | None:
    """Why this node could never hold the demand, even empty; None if it could."""
    if d.regions and node.region not in d.regions:
        return "region"
    if d.node_ids and node.id not in d.node_ids:
        return "node"
    if node.cpu_milli < d.cpu_milli:
        return "cpu"
    if node.memory_mib < d.memory_mib:
        return "memory"
    if node.disk_mib < d.disk_mib and d.disk_mib:
        return "disk"
    if d.gpu_count:
        usable = [g for g in node.gpus if _gpu_allowed(g.model, g.vram_mib, d)]
        if len(usable) < d.gpu_count:
            return "gpu"
    return None


def _gpu_allowed(model: str, vram_mib: int, d: Demand) -> bool:
    return (not d.gpu_models or model in d.gpu_models) and vram_mib >= d.min_vram_mib


def _pick_gpus(f: _Free, d: Demand) -> tuple[int, ...] | None:
    if not d.gpu_count:
        return ()
    models = {g.index: g for g in f.node.gpus}
    need = d.gpu_milli_per_gpu
    fitting = [
        (free_milli, i)
        for i, free_milli in f.gpu_free_milli.items()
        if free_milli >= need and _gpu_allowed(models[i].model, models[i].vram_mib, d)
    ]
    if len(fitting) < d.gpu_count:
        return None
    # tightest GPUs first, so whole GPUs stay whole for jobs that need them
    fitting.sort()
    return tuple(sorted(i for _, i in fitting[: d.gpu_count]))


def _fits_now(f: _Free, d: Demand) -> tuple[int, ...] | None:
    if not f.node.schedulable or _static_misfit(f.node, d):
        return None
    if f.cpu_milli < d.cpu_milli or f.memory_mib < d.memory_mib or (d.disk_mib and f.disk_mib < d.disk_mib):
        return None
    return _pick_gpus(f, d)


def _take(f: _Free, d: Demand, gpus: tuple[int, ...]) -> None:
    f.cpu_milli -= d.cpu_milli
    f.memory_mib -= d.memory_mib
    f.disk_mib -= d.disk_mib
    for i in gpus:
        f.gpu_free_milli[i] -= d.gpu_milli_per_gpu


def queue_order(job: Job) -> tuple[int, int]:
    """Higher priority first; within a priority, earlier submission first."""
    return (-job.priority, job.order)


def never_fits_reason(nodes: tuple[Node, ...], d: Demand) -> str | None:
    """A reason when no node of the network could hold the demand even if it were empty."""
    if not nodes:
        return "no nodes are registered"
    reasons: dict[str, int] = {}
    for n in nodes:
        why = _static_misfit(n, d)
        if why is None:
            return None
        reasons[why] = reasons.get(why, 0) + 1
    parts = ", ".join(f"{count} node(s): not enough {why}" for why, count in sorted(reasons.items()))
    return f"no node can ever hold this job ({parts})"


def schedule(snapshot: Snapshot) -> Decisions:
    """Greedy priority-ordered placement with best-fit node choice; gangs all-or-nothing."""
    decisions = Decisions()
    free = _free_capacity(snapshot)
    order = sorted(free.values(), key=lambda f: f.node.id)
    for job in sorted(snapshot.pending, key=queue_order):
        d = job.demand
        why = never_fits_reason(snapshot.nodes, d)
        if why:
            decisions.unschedulable.append(Unschedulable(job.id, why))
            continue
        placed: list[tuple[_Free, tuple[int, ...]]] = []
        for task in range(job.gang_size):
            best: tuple[tuple[int, int, str], _Free, tuple[int, ...]] | None = None
            for f in order:
                gpus = _fits_now(f, d)
                if gpus is None:
                    continue
                # best fit: least free GPU milli, then least free CPU after placing
                key = (sum(f.gpu_free_milli.values()) - d.gpu_milli_total, f.cpu_milli - d.cpu_milli, f.node.id)
                if best is None or key < best[0]:
                    best = (key, f, gpus)
            if best is None:
                break
            _, f, gpus = best
            _take(f, d, gpus)
            placed.append((f, gpus))
        if len(placed) < job.gang_size:
            for f, gpus in placed:  # all or nothing: give back what a partial gang took
                f.cpu_milli += d.cpu_milli
                f.memory_mib += d.memory_mib
                f.disk_mib += d.disk_mib
                for i in gpus:
                    f.gpu_free_milli[i] += d.gpu_milli_per_gpu
            decisions.waiting.append(Wait(job.id, "waiting for free capacity"))
            continue
        for task, (f, gpus) in enumerate(placed):
            decisions.starts.append(Start(job.id, f.node.id, gpus, d.gpu_share_milli, task))
    return decisions
