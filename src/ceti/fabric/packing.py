"""Packing: which concrete node and which GPUs each task gets, and the residual room it leaves.

The rule is best fit, aware of fragmentation: candidate nodes come cheapest useful work first and then best
fit (least free GPU milli); a GPU-sharing task goes onto the tightest GPU that still fits (a partly used GPU
before a whole one); a whole-GPU task takes only GPUs that are entirely free, so whole GPUs stay whole for
the jobs that need them and shares pile up on GPUs already shared.

The residual lives in plain Python lists while a level is packed (one task costs a few list reads), and is
written back to NumPy columns for the next level's class building (`Free.arrays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from operator import attrgetter

import numpy as np

from ceti.fabric.classes import NodeTable
from ceti.fabric.kernels import GpuSummary, Room
from ceti.fabric.model import WHOLE_GPU_MILLI, Allocation, Demand


def choose_gpus(free: list[int], ok: list[bool] | None, count: int, share: int) -> list[int] | None:
    """Positions of the GPUs one task takes on a node (and update `free`), or None if it does not fit."""
    if ok is None:
        top = max(free) if free else -1
        if top < (share or WHOLE_GPU_MILLI):
            return None  # the common miss (a node already full for the task), decided without a Python loop
        if count == 1 and not share and top == WHOLE_GPU_MILLI:  # the first whole free GPU, found in C
            p = free.index(WHOLE_GPU_MILLI)
            free[p] = 0
            return [p]
    if share:
        if count == 1:
            best = -1
            best_free = WHOLE_GPU_MILLI + 1
            for p, f in enumerate(free):
                if share <= f < best_free and (ok is None or ok[p]):
                    best, best_free = p, f
            if best < 0:
                return None
            free[best] -= share
            return [best]
        fits = sorted((f, p) for p, f in enumerate(free) if f >= share and (ok is None or ok[p]))
        if len(fits) < count:
            return None
        chosen = [p for _, p in fits[:count]]
        for p in chosen:
            free[p] -= share
        return chosen
    chosen = []
    for p, f in enumerate(free):  # the first `count` whole free GPUs, stopping as soon as there are enough
        if f >= WHOLE_GPU_MILLI and (ok is None or ok[p]):
            chosen.append(p)
            if len(chosen) == count:
                break
    else:
        return None
    for p in chosen:
        free[p] -= WHOLE_GPU_MILLI
    return chosen


class _GpuRows(dict):
    """Per node, its GPUs' free milli by position as a list, made from the matrix when first read: a round
    reads the GPUs of a few thousand nodes in Python (pre-emption, gangs, per-task placement), and lists for
    all 100k would cost more to make and free than the round spends on them."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.matrix = matrix

    def __missing__(self, r: int) -> list[int]:
        row = self[r] = self.matrix[r].tolist()
        return row


class Free:
    """The room left on every node: NumPy columns (cpu, memory, disk, per-GPU milli by position) for vectorised
    and compiled code, and per node a list of its GPUs' milli for Python code; `arrays` and `absorb` bring one
    up to the other."""

    def __init__(self, t: NodeTable, running: Sequence[Allocation]) -> None:
        self.t = t
        cpu = t.cpu_total.copy()
        mem = t.mem_total.copy()
        disk = t.disk_total.copy()
        gpu = np.where(t.gpu_valid, WHOLE_GPU_MILLI, -1).astype(np.int64)
        # per running allocation: its node's row (-1: not in the table), [cpu, memory, disk, share], GPU count
        self.running_cols = _subtract_running(t, running, cpu, mem, disk, gpu) if running else None
        # CPU, memory and disk: the columns themselves, read and changed in place by Python and compiled code
        self.cpu = cpu
        self.mem = mem
        self.disk = disk
        self.gpu = _GpuRows(gpu)  # changed in place by Python code, which then marks the node dirty
        self._arrays = Room(cpu, mem, disk, gpu)
        self.dirty: set[int] = set()
        self._gpu_summary: GpuSummary | None = None

    def arrays(self) -> Room:
        """The residual as NumPy columns, the GPUs brought up to date with what Python code placed since the last
        call."""
        gpu = self._arrays.gpu
        if self.dirty:
            rows = np.fromiter(self.dirty, np.int64, len(self.dirty))
            rl = rows.tolist()
            read = [r for r in rl if r in self.gpu]  # a node whose GPUs were never read kept them
            if read:
                gpu[read] = [self.gpu[r] for r in read]
            self.dirty.clear()
            if self._gpu_summary is not None:
                whole, most = self._gpu_summary
                g = gpu[rows]
                whole[rows] = (g >= WHOLE_GPU_MILLI).sum(axis=1)
                most[rows] = g.max(axis=1, initial=-1)
        return self._arrays

    def absorb(self, rows: np.ndarray) -> None:
        """The arrays of `arrays()` were changed in place at `rows` (by compiled packing): bring the GPU lists and
        the GPU summary up to date from them. Call it with no other change pending (right after `arrays()`)."""
        gpu = self._arrays[3]
        if self.gpu:  # only lists Python code read are kept (most rounds read a few hundred)
            if len(rows) * 8 > self.t.n:  # most of the nodes: forgetting every list is cheaper than picking
                self.gpu.clear()
            else:
                for r in rows.tolist():
                    self.gpu.pop(r, None)
        if self._gpu_summary is not None:  # a row placed on twice is written twice, alike
            whole, most = self._gpu_summary
            g = gpu[rows]
            whole[rows] = (g >= WHOLE_GPU_MILLI).sum(axis=1)
            most[rows] = g.max(axis=1, initial=-1)

    def gpu_summary(self) -> GpuSummary:
        """Per node: whole free GPUs, and the most milli free on one GPU (kept up to date like `arrays`).

        Enough to tell, with one gather per node instead of one per GPU, whether a node could take a task
        that may use any of its GPUs."""
        gpu = self.arrays()[3]
        if self._gpu_summary is None:
            self._gpu_summary = GpuSummary((gpu >= WHOLE_GPU_MILLI).sum(axis=1), gpu.max(axis=1, initial=-1))
        return self._gpu_summary

    def take(self, r: int, d: Demand, ok: list[bool] | None) -> list[int] | None:
        """Place one task of `d` on node `r` if it fits: GPU positions taken, or None (nothing changed)."""
        c, m, dk = d.cpu_milli, d.memory_mib, d.disk_mib
        if self.cpu[r] < c or self.mem[r] < m or (dk > 0 and self.disk[r] < dk):
            return None
        if d.gpu_count:
            pos = choose_gpus(self.gpu[r], ok, d.gpu_count, d.gpu_share_milli)
            if pos is None:
                return None
        else:
            pos = []
        self.cpu[r] -= c
        self.mem[r] -= m
        self.disk[r] -= dk
        self.dirty.add(r)
        return pos

    def gpu_room(self, r: int, count: int, share: int, ok: list[bool] | None) -> bool:
        """Whether node `r` still has the GPUs for one task (ignoring CPU and memory)."""
        if not count:
            return True
        need = share or WHOLE_GPU_MILLI
        n = 0
        for p, f in enumerate(self.gpu[r]):
            if f >= need and (ok is None or ok[p]):
                n += 1
                if n >= count:
                    return True
        return False

    def give(self, r: int, d: Demand, pos: Sequence[int]) -> None:
        """Undo `take`."""
        self.cpu[r] += d.cpu_milli
        self.mem[r] += d.memory_mib
        self.disk[r] += d.disk_mib
        per = d.gpu_share_milli or WHOLE_GPU_MILLI
        row = self.gpu[r]
        for p in pos:
            row[p] += per
        self.dirty.add(r)

    def release(self, a: Allocation) -> None:
        """Give back what a running allocation holds (it is being pre-empted)."""
        r = self.t.index.get(a.node_id)
        if r is None:
            return
        self.cpu[r] += a.cpu_milli
        self.mem[r] += a.memory_mib
        self.disk[r] += a.disk_mib
        row = self.gpu[r]
        for g in a.gpu_indices:
            p = self.t.position(r, g)
            if p is not None:
                row[p] += a.gpu_milli_per_gpu
        self.dirty.add(r)

    def hold(self, a: Allocation) -> None:
        """Undo `release`."""
        r = self.t.index.get(a.node_id)
        if r is None:
            return
        self.cpu[r] -= a.cpu_milli
        self.mem[r] -= a.memory_mib
        self.disk[r] -= a.disk_mib
        row = self.gpu[r]
        for g in a.gpu_indices:
            p = self.t.position(r, g)
            if p is not None:
                row[p] -= a.gpu_milli_per_gpu
        self.dirty.add(r)


def _subtract_running(
    t: NodeTable,
    running: Sequence[Allocation],
    cpu: np.ndarray,
    mem: np.ndarray,
    disk: np.ndarray,
    gpu: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subtract every running allocation, vectorised where it can be; returns per allocation its node's row
    (-1: not in the table), its [cpu, memory, disk, share, interruptible] and its GPU count (read once, for
    pre-emption too)."""
    get = t.index.get
    m = len(running)
    node = np.fromiter(map(get, map(_getter("node_id"), running), repeat(-1)), np.int64, m)
    ok = node >= 0
    n = t.n
    # one pass over the allocations for all five numbers (a pass per attribute costs as much each)
    cols = np.fromiter(chain.from_iterable(map(_alloc_cols, running)), np.int64, 5 * m).reshape(m, 5)
    for arr, i in ((cpu, 0), (mem, 1), (disk, 2)):
        arr -= np.bincount(node[ok], cols[ok, i], n).astype(np.int64)
    idx_tuples = list(map(_getter("gpu_indices"), running))
    lens = np.fromiter(map(len, idx_tuples), np.int64, m)
    total = int(lens.sum())
    if not total:
        return node, cols, lens
    flat = np.fromiter(chain.from_iterable(idx_tuples), np.int64, total)
    share = cols[:, 3]
    milli = np.repeat(np.where(share > 0, share, WHOLE_GPU_MILLI), lens)
    rows = np.repeat(node, lens)
    good = rows >= 0
    rows, flat, milli = rows[good], flat[good], milli[good]
    pos = t.positions(rows, flat)
    inside = pos >= 0
    np.subtract.at(gpu, (rows[inside], pos[inside]), milli[inside])
    return node, cols, lens


_alloc_cols = attrgetter("cpu_milli", "memory_mib", "disk_mib", "gpu_share_milli", "interruptible")


def _getter(name: str) -> attrgetter:
    return attrgetter(name)
