"""Equivalence classes: the columnar view of the nodes, job classes and node classes.

A round for 100,000 nodes cannot afford Python work per (job, node) pair, so the snapshot is turned once into
NumPy columns (`NodeTable`), pending jobs with the same needs are grouped (`JobClass`), and nodes that look the
same to a job are grouped per priority level (`NodeClasses`). The min-cost flow then runs between classes.

Nodes are put in id order first, so the result does not depend on the order of `snapshot.nodes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter

import numpy as np

from ceti.fabric.model import WHOLE_GPU_MILLI, Allocation, Demand, Job, Node

_BIG = np.int64(1 << 40)

# Bucket widths of the free shape that makes two nodes "look alike" to a job.
CPU_BUCKET_MILLI = 4000
MEMORY_BUCKET_MIB = 16384
DISK_BUCKET_MIB = 1 << 17
PARTIAL_GPU_BUCKET_MILLI = 100
PRICE_BANDS_PER_DOUBLING = 16  # about 4.5 % wide
RELIABILITY_BANDS = 50  # 2 % wide


class NodeTable:
    """Per-node columns plus the residual (free) capacity, which the round updates as it places work.

    GPUs are an (n, G) matrix of positions; `gpu_free` is -1 where a node has fewer than G GPUs, so a padded
    slot never fits anything.
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        ids = [n.id for n in nodes]
        if len(set(ids)) != len(ids):
            # duplicate ids would make decisions ambiguous; keep the first of each
            seen: set[str] = set()
            kept = []
            for n in nodes:
                if n.id not in seen:
                    seen.add(n.id)
                    kept.append(n)
            nodes = kept
            ids = [n.id for n in nodes]
        order = np.argsort(np.array(ids, dtype=object), kind="stable") if ids else np.zeros(0, np.int64)
        nodes = [nodes[i] for i in order.tolist()]
        self.nodes: list[Node] = nodes
        self.ids: list[str] = [ids[i] for i in order.tolist()]
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        n = self.n = len(nodes)

        def col(name: str, dtype: type) -> np.ndarray:
            return np.fromiter(map(attrgetter(name), nodes), dtype=dtype, count=n)

        self.cpu_total = col("cpu_milli", np.int64)
        self.mem_total = col("memory_mib", np.int64)
        self.disk_total = col("disk_mib", np.int64)
        self.price_gpu = col("price_per_gpu_hour", np.float64)
        self.price_cpu = col("price_per_cpu_hour", np.float64)
        self.reliability = col("reliability", np.float64)
        self.schedulable = col("schedulable", np.bool_)
        regions = list(map(attrgetter("region"), nodes))
        self.region_names: list[str] = sorted(set(regions))
        rid = {r: i for i, r in enumerate(self.region_names)}
        self.region = np.fromiter(map(rid.__getitem__, regions), dtype=np.int64, count=n)

        gpu_tuples = list(map(attrgetter("gpus"), nodes))
        counts = np.fromiter(map(len, gpu_tuples), dtype=np.int64, count=n)
        self.gpu_count = counts
        G = self.G = int(counts.max()) if n else 0
        G = max(G, 1)
        total = int(counts.sum())
        flat = list(chain.from_iterable(gpu_tuples))
        model_names = list(map(attrgetter("model"), flat))
        self.model_names: list[str] = sorted(set(model_names))
        mid = {m: i for i, m in enumerate(self.model_names)}
        f_model = np.fromiter(map(mid.__getitem__, model_names), dtype=np.int64, count=total)
        f_vram = np.fromiter(map(attrgetter("vram_mib"), flat), dtype=np.int64, count=total)
        f_index = np.fromiter(map(attrgetter("index"), flat), dtype=np.int64, count=total)
        row = np.repeat(np.arange(n), counts)
        starts = np.cumsum(counts) - counts
        pos = np.arange(total) - np.repeat(starts, counts)
        self.gpu_model = np.full((n, G), -1, np.int64)
        self.gpu_vram = np.zeros((n, G), np.int64)
        self.gpu_index = np.full((n, G), -1, np.int64)
        self.gpu_model[row, pos] = f_model
        self.gpu_vram[row, pos] = f_vram
        self.gpu_index[row, pos] = f_index
        self.gpu_valid = self.gpu_model >= 0
        self.gpu_free = np.where(self.gpu_valid, WHOLE_GPU_MILLI, -1).astype(np.int64)
        # nodes whose GPU.index values are not simply 0..k-1 need a lookup from index to position
        odd = np.unique(row[f_index != pos]) if total else np.zeros(0, np.int64)
        self._pos_of_index: dict[int, dict[int, int]] = {
            int(i): {int(x): p for p, x in enumerate(self.gpu_index[i, : counts[i]])} for i in odd
        }
        # a node's GPU type: (model, vram) when all its GPUs agree, else a type of its own (rare)
        first_model = self.gpu_model[:, 0]
        first_vram = self.gpu_vram[:, 0]
        same = (
            ((self.gpu_model == first_model[:, None]) & (self.gpu_vram == first_vram[:, None]))
            | ~self.gpu_valid
        ).all(axis=1)
        self.homogeneous = same
        type_key = np.where(counts > 0, first_model * (1 << 32) + first_vram, -1)
        _, gtype = np.unique(type_key, return_inverse=True)
        gtype = gtype.astype(np.int64)
        n_types = int(gtype.max()) + 1 if n else 0
        mixed = np.flatnonzero(~same)
        gtype[mixed] = n_types + np.arange(len(mixed))
        self.gpu_type = gtype
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = self.mem_total.copy()
        self.disk_free = self.disk_total.copy()

    # --- GPU positions ---
    def position(self, node: int, gpu_index: int) -> int | None:
        odd = self._pos_of_index.get(node)
        if odd is not None:
            return odd.get(gpu_index)
        return gpu_index if 0 <= gpu_index < self.gpu_count[node] else None

    def gpu_indices(self, node: int, positions: Iterable[int]) -> tuple[int, ...]:
        if node in self._pos_of_index:
            row = self.gpu_index[node]
            return tuple(sorted(int(row[p]) for p in positions))
        return tuple(sorted(positions))

    # --- residual bookkeeping ---
    def hold(self, a: Allocation, sign: int) -> None:
        """Take (sign=1) or give back (sign=-1) what a running allocation holds."""
        i = self.index.get(a.node_id)
        if i is None:
            return
        self.cpu_free[i] -= sign * a.cpu_milli
        self.mem_free[i] -= sign * a.memory_mib
        self.disk_free[i] -= sign * a.disk_mib
        per = a.gpu_milli_per_gpu
        for g in a.gpu_indices:
            p = self.position(i, g)
            if p is not None:
                self.gpu_free[i, p] -= sign * per

    def hold_all(self, running: Sequence[Allocation]) -> None:
        """Subtract every running allocation, vectorised (the common path for large snapshots)."""
        if not running:
            return
        idx = self.index
        node = np.fromiter((idx.get(a.node_id, -1) for a in running), dtype=np.int64, count=len(running))
        ok = node >= 0
        cpu = np.fromiter(map(attrgetter("cpu_milli"), running), np.int64, len(running))
        mem = np.fromiter(map(attrgetter("memory_mib"), running), np.int64, len(running))
        disk = np.fromiter(map(attrgetter("disk_mib"), running), np.int64, len(running))
        n = self.n
        self.cpu_free -= np.bincount(node[ok], cpu[ok], n).astype(np.int64)
        self.mem_free -= np.bincount(node[ok], mem[ok], n).astype(np.int64)
        self.disk_free -= np.bincount(node[ok], disk[ok], n).astype(np.int64)
        for a, i in zip(running, node.tolist(), strict=True):
            if i < 0 or not a.gpu_indices:
                continue
            per = a.gpu_milli_per_gpu
            for g in a.gpu_indices:
                p = self.position(i, g)
                if p is not None:
                    self.gpu_free[i, p] -= per

    # --- what a demand may use ---
    def gpu_allowed(self, d: Demand) -> np.ndarray:
        """(n, G) mask of GPUs whose model and VRAM suit the demand."""
        mask = self.gpu_valid
        if d.gpu_models:
            ids = [i for i, m in enumerate(self.model_names) if m in d.gpu_models]
            mask = mask & np.isin(self.gpu_model, ids)
        if d.min_vram_mib:
            mask = mask & (self.gpu_vram >= d.min_vram_mib)
        return mask

    def node_mask(self, d: Demand) -> np.ndarray:
        """Nodes that the demand's placement constraints (region, node ids) allow."""
        mask = np.ones(self.n, np.bool_)
        if d.regions:
            ids = [i for i, r in enumerate(self.region_names) if r in d.regions]
            mask &= np.isin(self.region, ids)
        if d.node_ids:
            m = np.zeros(self.n, np.bool_)
            m[[self.index[x] for x in d.node_ids if x in self.index]] = True
            mask &= m
        return mask

    def task_price(self, d: Demand) -> np.ndarray:
        """Per-node price per hour of one task (gpu_count x GPU ask + CPUs x CPU ask)."""
        return d.gpu_count * self.price_gpu + (d.cpu_milli / 1000.0) * self.price_cpu


def fit_counts(t: NodeTable, rows: np.ndarray, d: Demand, gpu_ok: np.ndarray | None) -> np.ndarray:
    """How many tasks of `d` each node in `rows` can take now (exact, given the residual).

    `gpu_ok` is the (len(rows), G) mask of usable GPUs (None: every GPU the node has).
    """
    cap = np.full(len(rows), _BIG, np.int64)
    if d.cpu_milli > 0:
        np.minimum(cap, t.cpu_free[rows] // d.cpu_milli, out=cap)
    if d.memory_mib > 0:
        np.minimum(cap, t.mem_free[rows] // d.memory_mib, out=cap)
    if d.disk_mib > 0:
        np.minimum(cap, t.disk_free[rows] // d.disk_mib, out=cap)
    if d.gpu_count:
        free = t.gpu_free[rows]
        ok = gpu_ok if gpu_ok is not None else t.gpu_valid[rows]
        if d.gpu_share_milli:
            s = d.gpu_share_milli
            if d.gpu_count == 1:
                slots = np.where(ok & (free > 0), free // s, 0).sum(axis=1)
            else:  # conservative: each GPU serves at most one task of the class per round
                slots = (ok & (free >= s)).sum(axis=1) // d.gpu_count
        else:
            slots = (ok & (free >= WHOLE_GPU_MILLI)).sum(axis=1) // d.gpu_count
        np.minimum(cap, slots, out=cap)
    # a node already over-committed (it happens when a node shrinks) takes nothing
    bad = (t.cpu_free[rows] < 0) | (t.mem_free[rows] < 0) | ((d.disk_mib > 0) & (t.disk_free[rows] < 0))
    cap[bad] = 0
    np.maximum(cap, 0, out=cap)
    # a demand of nothing at all: one task per node per round keeps the loops bounded
    np.minimum(cap, 1 << 20, out=cap)
    return cap


@dataclass(slots=True)
class JobClass:
    """Pending jobs that the round cannot tell apart: same demand, priority, gang size, bid and speeds."""

    demand: Demand
    priority: int
    gang_size: int
    bid_per_hour: float | None
    speed_by_model: tuple[tuple[str, float], ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return len(self.jobs) * self.gang_size

    @property
    def rank_key(self) -> tuple[int, str]:
        first = self.jobs[0]
        return (first.order, first.id)

    def speed(self, model: str) -> float:
        for m, s in self.speed_by_model:
            if m == model:
                return s
        return 1.0


def job_classes(pending: Sequence[Job]) -> list[JobClass]:
    """Group pending jobs; each class's jobs in queue order; classes by (-priority, first order)."""
    groups: dict[tuple, JobClass] = {}
    speed_sig: dict[int, tuple[tuple[str, float], ...]] = {}
    for j in pending:
        m = j.speed_by_model
        if m:
            sig = speed_sig.get(id(m))
            if sig is None:
                sig = speed_sig[id(m)] = tuple(sorted((str(k), float(v)) for k, v in m.items()))
        else:
            sig = ()
        key = (j.demand, j.priority, j.gang_size, j.bid_per_hour, sig)
        c = groups.get(key)
        if c is None:
            c = groups[key] = JobClass(j.demand, j.priority, max(1, j.gang_size), j.bid_per_hour, sig)
        c.jobs.append(j)
    out = list(groups.values())
    by_order = attrgetter("order", "id")
    for c in out:
        c.jobs.sort(key=by_order)
    out.sort(key=lambda c: (-c.priority, c.rank_key))
    return out


@dataclass(slots=True)
class NodeClasses:
    """Schedulable nodes with free room, grouped by what a job can see of them.

    Representative values are conservative (the class minimum of free room, maximum of price, minimum of
    reliability), so a capacity computed from them holds for every node of the class.
    """

    label: np.ndarray  # per row of `rows`: class id
    rows: np.ndarray  # node rows, grouped by class (sorted by class, then best fit)
    bounds: np.ndarray  # class c's rows are rows[bounds[c]:bounds[c+1]]
    count: np.ndarray
    gpu_type: np.ndarray  # a node row of the class, to read its GPU model and VRAM
    sample: np.ndarray
    region: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    disk: np.ndarray
    whole: np.ndarray  # free whole GPUs (exact in the key)
    partial: np.ndarray  # free milli on its best partly used GPU (class minimum, bucketed)
    price_gpu: np.ndarray
    price_cpu: np.ndarray
    reliability: np.ndarray

    @property
    def size(self) -> int:
        return len(self.count)

    def members(self, c: int) -> np.ndarray:
        return self.rows[self.bounds[c] : self.bounds[c + 1]]


def static_class_ids(t: NodeTable) -> np.ndarray:
    """What does not change during a round: GPU type, region, price band, reliability band."""
    if t.n == 0:
        return np.zeros(0, np.int64)
    pg = np.floor(np.log2(1.0 + np.maximum(t.price_gpu, 0.0) * 100.0) * PRICE_BANDS_PER_DOUBLING)
    pc = np.floor(np.log2(1.0 + np.maximum(t.price_cpu, 0.0) * 1000.0) * PRICE_BANDS_PER_DOUBLING)
    rel = np.floor(np.clip(t.reliability, 0.0, 1.0) * RELIABILITY_BANDS)
    m = np.stack([t.gpu_type, t.region, pg.astype(np.int64), pc.astype(np.int64), rel.astype(np.int64)], 1)
    _, inv = np.unique(m, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def node_classes(t: NodeTable, static_id: np.ndarray) -> NodeClasses:
    """Group schedulable nodes that still have room by (static class, bucketed free shape)."""
    rows = np.flatnonzero(t.schedulable & (t.cpu_free >= 0) & (t.mem_free >= 0))
    free = t.gpu_free[rows]
    whole = (free >= WHOLE_GPU_MILLI).sum(axis=1)
    part = np.where((free > 0) & (free < WHOLE_GPU_MILLI), free, 0).max(axis=1, initial=0)
    cpu_b = np.minimum(t.cpu_free[rows] // CPU_BUCKET_MILLI, 255)
    mem_b = np.minimum(t.mem_free[rows] // MEMORY_BUCKET_MIB, 255)
    disk_b = np.minimum(np.maximum(t.disk_free[rows], 0) // DISK_BUCKET_MIB, 15)
    part_b = part // PARTIAL_GPU_BUCKET_MILLI
    key = static_id[rows]
    for v, width in ((cpu_b, 256), (mem_b, 256), (disk_b, 16), (np.minimum(whole, 63), 64), (part_b, 16)):
        key = key * width + v
    # best fit inside a class: least free GPU milli, then least free CPU, then id order
    gpu_sum = np.where(free > 0, free, 0).sum(axis=1)
    order = np.lexsort((rows, t.cpu_free[rows], gpu_sum, key))
    rows = rows[order]
    key = key[order]
    whole = whole[order]
    part = part[order]
    if len(rows):
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    else:
        starts = np.zeros(0, np.int64)
    bounds = np.r_[starts, len(rows)].astype(np.int64)
    label = np.repeat(np.arange(len(starts)), np.diff(bounds))

    def cls_min(v: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(v, starts) if len(starts) else v[:0]

    def cls_max(v: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(v, starts) if len(starts) else v[:0]

    sample = rows[starts] if len(starts) else rows[:0]
    return NodeClasses(
        label=label,
        rows=rows,
        bounds=bounds,
        count=np.diff(bounds),
        gpu_type=t.gpu_type[sample],
        sample=sample,
        region=t.region[sample],
        cpu=cls_min(t.cpu_free[rows]),
        mem=cls_min(t.mem_free[rows]),
        disk=cls_min(t.disk_free[rows]),
        whole=whole[starts] if len(starts) else whole[:0],
        partial=(cls_min(part) // PARTIAL_GPU_BUCKET_MILLI) * PARTIAL_GPU_BUCKET_MILLI,
        price_gpu=cls_max(t.price_gpu[rows]),
        price_cpu=cls_max(t.price_cpu[rows]),
        reliability=cls_min(t.reliability[rows]),
    )


class Need:
    """A job class's constraints turned into lookups over the table's ids (models, regions, GPU types).

    Built once per class per round; every mask it returns is exact for every node, including nodes with
    mixed GPU models.
    """

    def __init__(self, t: NodeTable, c: JobClass) -> None:
        d = c.demand
        self.cls = c
        self.demand = d
        nm = len(t.model_names)
        model_ok = np.ones(nm + 1, np.bool_)  # last slot: the padding id -1
        if d.gpu_models:
            model_ok[:nm] = [m in d.gpu_models for m in t.model_names]
        model_ok[nm] = False
        self.model_ok = model_ok
        self.min_vram = d.min_vram_mib
        self.constrained_gpus = bool(d.gpu_models or d.min_vram_mib)
        region_ok = np.ones(len(t.region_names), np.bool_)
        if d.regions:
            region_ok[:] = [r in d.regions for r in t.region_names]
        self.region_ok = region_ok
        self.node_rows: np.ndarray | None = None
        if d.node_ids:
            self.node_rows = np.array(sorted(t.index[x] for x in d.node_ids if x in t.index), np.int64)
        # price limit per task: the whole job's bid spread over its gang
        self.price_limit = math.inf if c.bid_per_hour is None else c.bid_per_hour / c.gang_size + 1e-9
        speed = np.ones(nm + 1, np.float64)
        if c.speed_by_model and d.gpu_count:
            for i, m in enumerate(t.model_names):
                speed[i] = max(c.speed(m), 1e-3)
        speed[nm] = np.inf
        self.speed = speed

    def gpu_ok(self, t: NodeTable, rows: np.ndarray | int) -> np.ndarray:
        """(len(rows), G) mask of GPUs this class may use."""
        models = t.gpu_model[rows]
        ok = self.model_ok[models]  # -1 indexes the padding slot, which is False
        if self.min_vram:
            ok = ok & (t.gpu_vram[rows] >= self.min_vram)
        return ok

    def node_ok(self, t: NodeTable, rows: np.ndarray) -> np.ndarray:
        """Region, node id and bid constraints for each row (not the free room)."""
        ok = self.region_ok[t.region[rows]] if len(self.region_ok) else np.ones(len(rows), np.bool_)
        if self.node_rows is not None:
            ok = ok & np.isin(rows, self.node_rows)
        if self.price_limit != math.inf:
            d = self.demand
            price = d.gpu_count * t.price_gpu[rows] + (d.cpu_milli / 1000.0) * t.price_cpu[rows]
            ok = ok & (price <= self.price_limit)
        return ok

    def node_speed(self, t: NodeTable, rows: np.ndarray) -> np.ndarray:
        """Relative speed of the class on each row's GPUs (slowest usable GPU; 1.0 without GPUs)."""
        if not self.cls.speed_by_model or not self.demand.gpu_count:
            return np.ones(len(rows), np.float64)
        s = self.speed[t.gpu_model[rows]].min(axis=1)
        return np.where(np.isfinite(s), s, 1.0)
