"""Packing inside a class: which concrete node and which GPUs each task gets.

The rule is best fit, aware of fragmentation: nodes come in best-fit order (least free GPU milli first), a
GPU-sharing task goes onto the tightest GPU that still fits (partly used GPUs before whole ones), and a
whole-GPU task takes whole GPUs only, so whole GPUs stay whole for jobs that need them.
"""

from __future__ import annotations

import numpy as np

from ceti.fabric.classes import Need, NodeTable
from ceti.fabric.decisions import Start
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job


def choose_gpus(free: list[int], ok: list[bool], d: Demand) -> list[int] | None:
    """Positions of the GPUs one task takes on a node (and update `free`), or None if it does not fit."""
    k = d.gpu_count
    if not k:
        return []
    if d.gpu_share_milli:
        s = d.gpu_share_milli
        fits = sorted((f, p) for p, f in enumerate(free) if ok[p] and f >= s)
        if len(fits) < k:
            return None
        chosen = [p for _, p in fits[:k]]
        for p in chosen:
            free[p] -= s
        return chosen
    chosen = [p for p, f in enumerate(free) if ok[p] and f >= WHOLE_GPU_MILLI][:k]
    if len(chosen) < k:
        return None
    for p in chosen:
        free[p] -= WHOLE_GPU_MILLI
    return chosen


def take_tasks(t: NodeTable, row: int, d: Demand, count: int, need: Need | None) -> list[tuple[int, ...]]:
    """Put `count` tasks of `d` on node `row` (the caller checked they fit); GPU indices per task."""
    t.cpu_free[row] -= count * d.cpu_milli
    t.mem_free[row] -= count * d.memory_mib
    t.disk_free[row] -= count * d.disk_mib
    if not d.gpu_count:
        return [()] * count
    free = t.gpu_free[row].tolist()
    ok = (need.gpu_ok(t, row) if need is not None else t.gpu_valid[row]).tolist()
    out: list[tuple[int, ...]] = []
    for _ in range(count):
        chosen = choose_gpus(free, ok, d)
        if chosen is None:  # cannot happen when the caller used fit_counts; be safe anyway
            raise AssertionError(f"task does not fit on node {t.ids[row]}")
        out.append(t.gpu_indices(row, chosen))
    t.gpu_free[row] = free
    return out


def pack_jobs(
    t: NodeTable,
    jobs: list[Job],
    gang_size: int,
    d: Demand,
    rows: np.ndarray,
    caps: np.ndarray,
    need: Need | None,
    starts: list[Start],
    max_tasks: int | None = None,
) -> int:
    """Place as many whole jobs (all gang tasks) as the slots allow, in queue order; returns jobs placed.

    `rows` are candidate nodes in preference order, `caps` their exact free slots for `d`.
    """
    total = int(caps.sum())
    if max_tasks is not None:
        total = min(total, max_tasks)
    n_jobs = min(len(jobs), total // gang_size)
    if n_jobs <= 0:
        return 0
    want = n_jobs * gang_size
    nz = np.flatnonzero(caps > 0)
    take = np.minimum(caps[nz], want)
    cum = np.cumsum(take)
    last = int(np.searchsorted(cum, want))
    sel = nz[: last + 1]
    counts = take[: last + 1].copy()
    counts[-1] -= int(cum[last]) - want
    share = d.gpu_share_milli
    job_iter = iter(jobs[:n_jobs])
    job = next(job_iter)
    task = 0
    ids = t.ids
    for r, c in zip(rows[sel].tolist(), counts.tolist(), strict=True):
        if c <= 0:
            continue
        node_id = ids[r]
        for gpus in take_tasks(t, r, d, c, need):
            starts.append(Start(job.id, node_id, gpus, share, task))
            task += 1
            if task == gang_size:
                task = 0
                job = next(job_iter, job)
    return n_jobs
