"""Equivalence classes: the columnar view of the nodes, job kinds and node classes.

A round for 100,000 nodes cannot afford Python work per (job, node) pair, so the snapshot is turned once into
NumPy columns (`NodeTable`), pending jobs that ask the same of a node's GPUs and places are grouped
(`JobKind`), and nodes that look alike to a job are grouped per priority level (`NodeClasses`). The min-cost
flow runs between kinds and node classes; packing then checks every job's exact demand on concrete nodes.

Nodes are put in id order first, so the result does not depend on the order of `snapshot.nodes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import attrgetter, lt

import numpy as np

from ceti.fabric.kernels import Classes, node_features, reliable_prices
from ceti.fabric.model import Job, Node

# Bucket edges of the free shape that makes two nodes "look alike" to a job.
PARTIAL_GPU_BUCKET_MILLI = 250
CPU_EDGES_MILLI = (8000, 32000)
MEMORY_EDGES_MIB = (32768, 131072)
# Up to this many nodes with room, classes use the exact free shape if that gives at most MAX_EXACT_CLASSES.
EXACT_CLASS_ROWS = 20_000
MAX_EXACT_CLASSES = 3_000
# Per-hour failure probability (1 - reliability) edges: nodes in different bands are never one class, so the
# flow can send long jobs to steady nodes and short ones to the rest.
FAILURE_EDGES = (0.001, 0.01, 0.1)

_node_cols = attrgetter(
    "cpu_milli",
    "memory_mib",
    "disk_mib",
    "price_per_gpu_hour",
    "price_per_cpu_hour",
    "reliability",
    "schedulable",
)


def _gpu_columns(
    gpus: list[tuple], need_vram: bool
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per GPU tuple: its length, and (n, G) matrices of model ids (-1 past its end), `GPU.index` and VRAM (0
    unless `need_vram`); the sorted model names the ids index."""
    n = len(gpus)
    counts = np.fromiter(map(len, gpus), dtype=np.int64, count=n)
    G = max(int(counts.max()) if n else 0, 1)
    total = int(counts.sum())
    flat = list(chain.from_iterable(gpus))
    model_names = list(map(attrgetter("model"), flat))
    names = sorted(set(model_names))
    mid = {m: i for i, m in enumerate(names)}
    row = np.repeat(np.arange(n), counts)
    pos = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    gpu_model = np.full((n, G), -1, np.int64)
    gpu_model[row, pos] = np.fromiter(map(mid.__getitem__, model_names), np.int64, total)
    index = np.full((n, G), -1, np.int64)
    index[row, pos] = np.fromiter(map(attrgetter("index"), flat), np.int64, total)
    vram = np.zeros((n, G), np.int64)
    if need_vram:
        vram[row, pos] = np.fromiter(map(attrgetter("vram_mib"), flat), np.int64, total)
    return counts, names, gpu_model, index, vram


class NodeTable:
    """Per-node columns, built once per round; the residual (free) room lives in `packing.Free`.

    GPUs are an (n, G) matrix of positions (a GPU's place in `node.gpus`); `gpu_model` is -1 where a node has
    fewer than G GPUs.
    """

    def __init__(self, nodes: Sequence[Node], need_vram: bool = True) -> None:
        nodes = list(nodes)
        ids = [n.id for n in nodes]
        if not all(map(lt, ids, islice(ids, 1, None))):
            if len(set(ids)) != len(ids):  # duplicate ids: keep the first of each
                first: dict[str, Node] = {}
                for nd in nodes:
                    first.setdefault(nd.id, nd)
                nodes = list(first.values())
                ids = [n.id for n in nodes]
            order = sorted(range(len(ids)), key=ids.__getitem__)
            nodes = [nodes[i] for i in order]
            ids = [ids[i] for i in order]
        self.nodes: list[Node] = nodes
        self.ids: list[str] = ids
        self.index: dict[str, int] = dict(zip(ids, range(len(ids)), strict=True))
        n = self.n = len(nodes)
        cols = np.fromiter(chain.from_iterable(map(_node_cols, nodes)), np.float64, n * 7).reshape(n, 7)
        self.cpu_total = cols[:, 0].astype(np.int64)
        self.mem_total = cols[:, 1].astype(np.int64)
        self.disk_total = cols[:, 2].astype(np.int64)
        self.price_gpu = cols[:, 3].copy()
        self.price_cpu = cols[:, 4].copy()
        self.reliability = cols[:, 5].copy()
        self.schedulable = cols[:, 6] != 0
        # A node's "place" is its region with its features: constraints on either are one lookup per place id,
        # and node classes never mix nodes that differ in either.
        places = list(map(attrgetter("region", "features"), nodes))
        place_list = sorted(set(places), key=lambda p: (p[0], sorted(p[1])))
        pid = {p: i for i, p in enumerate(place_list)}
        self.region_names: list[str] = [p[0] for p in place_list]  # the region of each place id
        self.place_features: list[frozenset[str]] = [p[1] for p in place_list]
        self.region = np.fromiter(map(pid.__getitem__, places), dtype=np.int64, count=n)

        self.gpus: list[tuple] = list(map(attrgetter("gpus"), nodes))
        # nodes of one make share their GPU tuple (`model.shared_gpus`): each distinct tuple is read once
        ids = list(map(id, self.gpus))
        last = dict(zip(ids, range(n), strict=True))  # a row of each distinct tuple
        if len(last) * 2 <= n:
            reps = [self.gpus[r] for r in last.values()]
            make = np.fromiter(map({x: i for i, x in enumerate(last)}.__getitem__, ids), np.int64, n)
        else:
            reps, make = self.gpus, None
        counts, self.model_names, gpu_model, f_index, gpu_vram = _gpu_columns(reps, need_vram)
        if make is not None:
            counts, gpu_model, f_index, gpu_vram = (
                counts[make],
                gpu_model[make],
                f_index[make],
                gpu_vram[make],
            )
        self.gpu_count = counts
        G = self.G = gpu_model.shape[1]
        self.gpu_model = gpu_model
        self.gpu_valid = gpu_model >= 0
        # nodes whose GPU.index values are not simply 0..k-1 need a lookup from index to position
        odd = np.flatnonzero(((f_index != np.arange(G)) & self.gpu_valid).any(axis=1))
        self._pos_of_index: dict[int, dict[int, int]] = {
            int(i): {g.index: p for p, g in enumerate(self.gpus[int(i)])} for i in odd
        }
        self.gpu_vram = gpu_vram
        # a node's GPU type: (model, VRAM) when all its GPUs agree, else a type of its own (rare)
        first_model = self.gpu_model[:, 0]
        first_vram = self.gpu_vram[:, 0]
        same = (
            ((self.gpu_model == first_model[:, None]) & (self.gpu_vram == first_vram[:, None]))
            | ~self.gpu_valid
        ).all(axis=1)
        self.homogeneous = same
        type_key = np.where(counts > 0, first_model * (1 << 40) + first_vram, -1)
        type_vals, gtype = np.unique(type_key, return_inverse=True)
        gtype = gtype.reshape(-1).astype(np.int64)
        self.n_plain_types = len(type_vals)
        mixed = np.flatnonzero(~same)
        gtype[mixed] = self.n_plain_types + np.arange(len(mixed))
        self.gpu_type = gtype
        self.type_list: list[int] = gtype.tolist()
        n_types = int(gtype.max(initial=-1)) + 1
        first_row = np.zeros(n_types, np.int64)
        first_row[gtype[::-1]] = np.arange(n)[::-1]
        self.type_first_row = first_row  # a node of each GPU type
        self.need_memo: dict[tuple, object] = {}  # lookups `Need` shares between kinds that ask alike
        self._price_ranks: dict[tuple[float, float], tuple[np.ndarray, int] | None] = {}

    # --- GPU positions and indices ---
    def position(self, node: int, gpu_index: int) -> int | None:
        odd = self._pos_of_index.get(node)
        if odd is not None:
            return odd.get(gpu_index)
        return gpu_index if 0 <= gpu_index < len(self.gpus[node]) else None

    def positions(self, rows: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Vectorised `position` (-1 where the node has no such GPU)."""
        pos = np.where((indices >= 0) & (indices < self.gpu_count[rows]), indices, -1)
        if self._pos_of_index:
            odd = np.isin(rows, np.fromiter(self._pos_of_index.keys(), np.int64, len(self._pos_of_index)))
            for k in np.flatnonzero(odd).tolist():
                p = self.position(int(rows[k]), int(indices[k]))
                pos[k] = -1 if p is None else p
        return pos

    @property
    def indices_are_positions(self) -> bool:
        """Whether every node's GPU indices are 0..k-1 in order (then a GPU's index is its position)."""
        return not self._pos_of_index

    def gpu_indices(self, node: int, positions: Sequence[int]) -> tuple[int, ...]:
        if node not in self._pos_of_index:  # indices are positions (the common case)
            return tuple(sorted(positions))
        gpus = self.gpus[node]
        return tuple(sorted(gpus[p].index for p in positions))

    def price_ranks(self, top_pg: float, top_pc: float) -> tuple[np.ndarray, int] | None:
        """Every node's price of reliable work (`kernels.node_features`) against these dearest asks, as its rank
        among all nodes (equal prices, equal ranks), and how many distinct; None where a price is NaN. The asks
        and reliabilities do not change in a round, so the node classes' builds share one sort."""
        key = (top_pg, top_pc)
        if key not in self._price_ranks:
            got = None
            price = reliable_prices(self.price_gpu, self.price_cpu, self.reliability, top_pg, top_pc)
            if self.n and not np.isnan(price).any():
                got = dense_rank(price)
            self._price_ranks[key] = got
        return self._price_ranks[key]

    # --- static groups ---
    def shape_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One row per distinct static shape (GPU type and count, region, CPU, memory, disk totals, whether it
        takes new work), how many nodes each stands for, and the lowest asks among them: enough to decide
        whether any node could ever hold a demand, and to explain why not."""
        if self.n == 0:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0), np.zeros(0)
        # one int64 per node that orders like the tuple of its columns: a column of small range is its own rank
        # (no sort), others are ranked; the key is re-ranked only where it would no longer fit
        key = np.zeros(self.n, np.int64)
        span = 1
        for v in (
            self.gpu_type,
            self.region,
            self.gpu_count,
            self.cpu_total,
            self.mem_total,
            self.disk_total,
            self.schedulable.astype(np.int64),
        ):
            lo, hi = int(v.min()), int(v.max())
            if hi - lo < 1 << 16:
                rank, distinct = v - lo, hi - lo + 1
            else:
                _, rank = np.unique(v, return_inverse=True)
                rank = rank.reshape(-1)
                distinct = int(rank.max()) + 1
            if span * distinct >= 1 << 62:
                _, key = np.unique(key, return_inverse=True)
                key = key.reshape(-1)
                span = int(key.max()) + 1
            key = key * distinct + rank
            span *= distinct
        _, first, group, count = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        group = group.reshape(-1)
        min_pg = np.full(len(first), np.inf)
        min_pc = np.full(len(first), np.inf)
        np.minimum.at(min_pg, group, self.price_gpu)
        np.minimum.at(min_pc, group, self.price_cpu)
        return first.astype(np.int64), count.astype(np.int64), min_pg, min_pc


@dataclass(slots=True)
class JobKind:
    """Pending jobs that ask the same of a node's GPUs and location, at one priority and gang size.

    CPU, memory, disk and bid may differ between its jobs: packing checks each job's own. `jobs` is in queue
    order (order, then id).
    """

    priority: int
    gang_size: int
    gpu_count: int
    gpu_share_milli: int
    gpu_models: frozenset[str]
    min_vram_mib: int
    regions: frozenset[str]
    node_ids: frozenset[str]
    features: frozenset[str]
    speed_by_model: tuple[tuple[str, float], ...]
    horizon_h: float = 1.0  # hours a node failure would throw away, to a power of two (`horizon_of`)
    jobs: list[Job] = field(default_factory=list)
    # each job's position in the sequence `job_kinds` grouped (for reading its columns); stale once `jobs` is
    # edited, which its length then tells
    at: list[int] = field(default_factory=list)

    @property
    def node_ask(self) -> tuple:
        """What every task of the kind asks of a node, apart from CPU, memory and disk: kinds that differ only
        in priority, gang size, speed profile or horizon share it."""
        return (
            self.gpu_count,
            self.gpu_share_milli,
            self.gpu_models,
            self.min_vram_mib,
            self.regions,
            self.node_ids,
            self.features,
        )

    def speed(self, model: str) -> float:
        for m, s in self.speed_by_model:
            if m == model:
                return s
        return 1.0


_kind_fields = attrgetter(
    "gpu_count", "gpu_share_milli", "gpu_models", "min_vram_mib", "regions", "node_ids", "features"
)
_job_fields = attrgetter("priority", "gang_size", "speed_by_model", "demand", "expected_duration_h")
_order = attrgetter("order")
_queue_key = attrgetter("order", "id")


def horizon_of(expected_duration_h: float | None) -> float:
    """A job's expected duration rounded to a power of two (1/64 h to 4096 h): jobs within a factor of about
    1.4 of each other share a kind. Unknown counts as one hour."""
    if expected_duration_h is None or not expected_duration_h > 0:
        return 1.0
    return 2.0 ** round(math.log2(min(max(expected_duration_h, 1 / 64), 4096.0)))


def job_kinds(pending: Sequence[Job]) -> list[JobKind]:
    """Group pending jobs; each kind's jobs in queue order; kinds by (-priority, first job's order)."""
    orders = list(map(_order, pending))
    # a queue read in order (the server's, the simulators') needs no sort: orders strictly increasing
    if all(map(lt, orders, islice(orders, 1, None))):
        jobs, at = pending, range(len(pending))
    else:
        at = sorted(range(len(pending)), key=list(map(_queue_key, pending)).__getitem__)
        jobs = list(map(pending.__getitem__, at))
    groups: dict[tuple, JobKind] = {}
    speed_sig: dict[int, tuple[tuple[str, float], ...]] = {}
    for i, j, (prio, gang, sp, d, dur) in zip(at, jobs, map(_job_fields, jobs), strict=True):
        if sp:
            sig = speed_sig.get(id(sp))
            if sig is None:
                sig = speed_sig[id(sp)] = tuple(sorted((str(k), float(v)) for k, v in sp.items()))
        else:
            sig = ()
        key = (prio, gang, sig, _kind_fields(d), 1.0 if dur is None else horizon_of(dur))
        k = groups.get(key)
        if k is None:
            k = groups[key] = JobKind(prio, max(1, gang), *key[3], sig, key[4])
        k.jobs.append(j)
        k.at.append(i)
    out = list(groups.values())
    out.sort(key=lambda k: (-k.priority, k.jobs[0].order, k.jobs[0].id))
    return out


class Need:
    """A kind's constraints as lookups over the table's ids (models, regions, GPU types). Exact for every
    node, including nodes with mixed GPU models."""

    def __init__(self, t: NodeTable, k: JobKind) -> None:
        self.kind = k
        self.min_vram = k.min_vram_mib
        self.constrained_gpus = bool(k.gpu_count and (k.gpu_models or k.min_vram_mib))
        # thousands of kinds ask for a few hundred combinations of models, places and speeds: the lookups (and
        # the per-GPU-type caches below) are built once per table and shared, read only
        memo = t.need_memo
        got = memo.get(("models", k.gpu_models))
        if got is None:
            nm = len(t.model_names)
            got = np.ones(nm + 1, np.bool_)  # the last slot is the padding id -1
            if k.gpu_models:
                got[:nm] = [m in k.gpu_models for m in t.model_names]
            got[nm] = False
            memo[("models", k.gpu_models)] = got
        self.model_ok = got
        got = memo.get(("places", k.regions, k.features))
        if got is None:
            got = np.ones(max(len(t.region_names), 1), np.bool_)
            if k.regions:
                got[: len(t.region_names)] = [r in k.regions for r in t.region_names]
            if k.features:
                got[: len(t.place_features)] &= [k.features <= f for f in t.place_features]
            memo[("places", k.regions, k.features)] = got
        self.region_ok = got
        self.node_rows: np.ndarray | None = None
        if k.node_ids:
            self.node_rows = np.array(sorted(t.index[x] for x in k.node_ids if x in t.index), np.int64)
        profile = k.speed_by_model if k.gpu_count else ()
        got = memo.get(("speed", profile))
        if got is None:
            got = np.ones(len(t.model_names) + 1, np.float64)
            if profile:
                for i, m in enumerate(t.model_names):
                    got[i] = max(k.speed(m), 1e-3)
            got[-1] = np.inf
            memo[("speed", profile)] = got
        self.speed = got
        self._gpus = (k.gpu_models, k.min_vram_mib)
        # per GPU type (or mixed node): the per-GPU mask as a list, or None where the kind may use every GPU
        self._ok_cache: dict[int, tuple[list[bool] | None]] = memo.setdefault(("gpu masks", self._gpus), {})
        # what per-class lookups of the kind depend on: kinds alike share them (`schedule._Round._per_kind`)
        self.ok_key = (k.regions, k.features, self._gpus if self.constrained_gpus else bool(k.gpu_count))
        self.speed_key = k.speed_by_model if k.speed_by_model and k.gpu_count else ()

    def gpu_ok(self, t: NodeTable, rows: np.ndarray | int) -> np.ndarray:
        """Mask (rows x G) of the GPUs this kind may use."""
        ok = self.model_ok[t.gpu_model[rows]]
        if self.min_vram:
            ok = ok & (t.gpu_vram[rows] >= self.min_vram)
        return ok

    def type_ok(self, t: NodeTable) -> np.ndarray:
        """Per GPU type: may the kind use (some of) its GPUs?"""
        got = t.need_memo.get(("type ok", self._gpus))
        if got is None:
            got = t.need_memo[("type ok", self._gpus)] = self.gpu_ok(t, t.type_first_row).any(axis=1)
        return got

    def class_speed(self, t: NodeTable, types: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Speed of the kind on node classes (by their GPU type; a sample node stands for the class)."""
        if not self.kind.speed_by_model or not self.kind.gpu_count:
            return np.ones(len(types), np.float64)
        return self.node_speed(t, sample)

    def gpu_ok_list(self, t: NodeTable, row: int) -> list[bool] | None:
        """Per-GPU mask of one node as a list, or None when every GPU of the node is usable."""
        if not self.constrained_gpus:
            return None
        typ = t.type_list[row]
        got = self._ok_cache.get(typ if typ < t.n_plain_types else -1 - row)
        if got is None:
            mask = self.gpu_ok(t, row)
            got = (None,) if bool(mask[t.gpu_valid[row]].all()) else (mask.tolist(),)
            self._ok_cache[typ if typ < t.n_plain_types else -1 - row] = got
        return got[0]

    def place_ok(self, t: NodeTable, rows: np.ndarray) -> np.ndarray:
        """Region and node-id constraints for each row."""
        ok = self.region_ok[t.region[rows]] if t.n else np.ones(len(rows), np.bool_)
        if self.node_rows is not None:
            ok = ok & np.isin(rows, self.node_rows)
        return ok

    def node_speed(self, t: NodeTable, rows: np.ndarray) -> np.ndarray:
        """Speed of the kind on each row's GPUs (slowest usable GPU; 1.0 without GPUs)."""
        if not self.kind.speed_by_model or not self.kind.gpu_count:
            return np.ones(len(rows), np.float64)
        s = self.speed[t.gpu_model[rows]].min(axis=1)
        return np.where(np.isfinite(s), s, 1.0)


@dataclass(slots=True)
class NodeClasses:
    """Schedulable nodes grouped by GPU type, region and bucketed free shape.

    Two sets of representatives: conservative (class minimum of free room: capacities from it hold for every
    member, used by the flow) and optimistic (class maximum: no member has more, used to rule classes out).
    Members are ordered cheapest useful work first (ask / reliability), then best fit.
    """

    rows: np.ndarray  # node rows grouped by class
    bounds: np.ndarray  # class c's rows are rows[bounds[c]:bounds[c+1]]
    count: np.ndarray
    sample: np.ndarray  # one member row per class (to read GPU type and region)
    gpu_type: np.ndarray
    region: np.ndarray
    whole: np.ndarray  # free whole GPUs (exact: part of the key)
    cpu_min: np.ndarray
    mem_min: np.ndarray
    disk_min: np.ndarray
    partial_min: np.ndarray  # free milli on the best partly used GPU
    cpu_max: np.ndarray
    mem_max: np.ndarray
    cpu_mean: np.ndarray
    mem_mean: np.ndarray
    partial_max: np.ndarray
    price_gpu: np.ndarray  # class mean ask
    price_cpu: np.ndarray
    price_gpu_min: np.ndarray  # the lowest ask of a member (a bid below it affords no member)
    price_cpu_min: np.ndarray
    reliability: np.ndarray  # class mean
    # per class, members as a list (read by packing, which many kinds may do for one big class)
    _members: dict[int, list[int]] = field(default_factory=dict)
    # per (class, what a task asks of the GPUs): members before this position have no such GPUs left. Free
    # room only shrinks while classes are packed, so every kind asking the same of the GPUs may skip them.
    gpu_cursor: dict[tuple, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.count)

    def columns(self) -> Classes:
        """The classes as the compiled loops read them."""
        return Classes(
            self.rows,
            self.bounds,
            self.count,
            self.region,
            self.gpu_type,
            self.whole,
            self.partial_min,
            self.partial_max,
            self.cpu_max,
            self.mem_max,
            self.cpu_mean,
            self.mem_mean,
            self.price_gpu,
            self.price_cpu,
            self.price_gpu_min,
            self.price_cpu_min,
            self.reliability,
        )

    def members(self, c: int) -> list[int]:
        got = self._members.get(c)
        if got is None:
            got = self._members[c] = self.rows[self.bounds[c] : self.bounds[c + 1]].tolist()
        return got


def dense_rank(v: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Each element's rank among the distinct values of `v` (equal values, equal ranks), and how many distinct;
    None where `v` holds NaN (NaNs sort last but never compare equal)."""
    n = len(v)
    o = np.argsort(v)
    s = v[o]
    if n and s.dtype.kind == "f" and np.isnan(s[-1]):
        return None
    new = np.empty(n, np.int64)
    if n:
        new[0] = 0
    np.not_equal(s[1:], s[:-1], out=new[1:])
    rank = np.empty(n, np.int64)
    rank[o] = np.cumsum(new)
    return rank, (int(rank[o[-1]]) + 1 if n else 0)


def lex_order(keys: Sequence[np.ndarray | tuple[np.ndarray, int]]) -> np.ndarray:
    """The stable order by `keys`, the first key primary (`np.lexsort(keys[::-1])`), in about a third of its
    time: each key becomes its dense rank (one unstable sort each), and the ranks and the position make one
    distinct int64 per element, sorted once. A key may come ranked already, as (codes, span): non-negative ints
    below `span` that order as the key does. Falls back to `np.lexsort` where that number would not fit or a
    key holds NaN."""
    n = len(keys[0][0] if isinstance(keys[0], tuple) else keys[0])
    if n < 2:
        return np.arange(n, dtype=np.int64)
    code = np.zeros(n, np.int64)
    span = 1
    for v in keys:
        ranked = v if isinstance(v, tuple) else dense_rank(v)
        if ranked is None:
            return np.lexsort(tuple(k[0] if isinstance(k, tuple) else k for k in reversed(keys)))
        rank, distinct = ranked
        span *= distinct
        if span * n >= 1 << 62:
            return np.lexsort(tuple(k[0] if isinstance(k, tuple) else k for k in reversed(keys)))
        code = code * distinct + rank
    return np.argsort(code * n + np.arange(n, dtype=np.int64))


def node_classes(
    t: NodeTable,
    cpu_free: np.ndarray,
    mem_free: np.ndarray,
    disk_free: np.ndarray,
    gpu_free: np.ndarray,
    by_reliability: bool = False,
) -> NodeClasses:
    """Group schedulable nodes that still have room, vectorised. `by_reliability`: never mix nodes of different
    reliability bands (rounds where some job has a duration to weigh reliability against)."""
    rows = np.flatnonzero(t.schedulable & (cpu_free >= 0) & (mem_free >= 0) & (disk_free >= 0))
    # one compiled pass: free GPUs, the bucketed key, and (the same currency as the flow's arc cost) the
    # price of reliable work, (1 + relative ask) / reliability
    whole, part, gpu_sum, band, bucket_key, eff_price, top_pg, top_pc = node_features(
        rows, cpu_free, mem_free, gpu_free, t.gpu_type, t.region, t.reliability, t.price_gpu, t.price_cpu,
        np.asarray(FAILURE_EDGES, np.float64), by_reliability, np.asarray(CPU_EDGES_MILLI, np.int64),
        np.asarray(MEMORY_EDGES_MIB, np.int64), len(t.region_names), PARTIAL_GPU_BUCKET_MILLI,
    )  # fmt: skip
    cpu = cpu_free[rows]
    mem = mem_free[rows]
    key = None
    if len(rows) <= EXACT_CLASS_ROWS:
        # small enough: classes on the exact free shape, so the flow's capacities are exact
        inv = np.zeros(len(rows), np.int64)
        for v in (t.gpu_type[rows], t.region[rows], band, whole, part, cpu, mem, disk_free[rows]):
            _, vi = np.unique(v, return_inverse=True)
            inv = inv * (int(vi.max(initial=0)) + 1) + vi.reshape(-1)
            _, inv = np.unique(inv, return_inverse=True)
            inv = inv.reshape(-1)
        if int(inv.max(initial=-1)) + 1 <= MAX_EXACT_CLASSES:
            key = inv.astype(np.int64)
    if key is None:
        key = bucket_key
    # by class, then price, then least free GPU milli, then least free CPU, then row: lexsort is stable and
    # `rows` ascend, so the row needs no key, and GPU milli and CPU share one where their product fits
    most_cpu = int(cpu.max(initial=0)) + 1
    # the price as its rank among all nodes, sorted once a round (the same order as the price's own)
    ranks = t.price_ranks(top_pg, top_pc)
    price = eff_price if ranks is None else (ranks[0][rows], ranks[1])
    if int(gpu_sum.max(initial=0)) * most_cpu < 1 << 62:
        order = lex_order((key, price, gpu_sum * most_cpu + cpu))
    else:
        order = lex_order((key, price, gpu_sum, cpu))
    rows, key, whole, part, cpu, mem = (
        rows[order],
        key[order],
        whole[order],
        part[order],
        cpu[order],
        mem[order],
    )
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(rows) else np.zeros(0, np.int64)
    bounds = np.r_[starts, len(rows)].astype(np.int64)
    count = np.diff(bounds)

    def red(fn: np.ufunc, v: np.ndarray) -> np.ndarray:
        return fn.reduceat(v, starts) if len(starts) else v[:0]

    sample = rows[starts] if len(starts) else rows[:0]
    return NodeClasses(
        rows=rows,
        bounds=bounds,
        count=count,
        sample=sample,
        gpu_type=t.gpu_type[sample],
        region=t.region[sample],
        whole=whole[starts] if len(starts) else whole[:0],
        cpu_min=red(np.minimum, cpu),
        mem_min=red(np.minimum, mem),
        disk_min=red(np.minimum, disk_free[rows]),
        partial_min=red(np.minimum, part),
        cpu_max=red(np.maximum, cpu),
        mem_max=red(np.maximum, mem),
        cpu_mean=red(np.add, cpu) / np.maximum(count, 1),
        mem_mean=red(np.add, mem) / np.maximum(count, 1),
        partial_max=red(np.maximum, part),
        price_gpu=red(np.add, t.price_gpu[rows]) / np.maximum(count, 1),
        price_cpu=red(np.add, t.price_cpu[rows]) / np.maximum(count, 1),
        price_gpu_min=red(np.minimum, t.price_gpu[rows]),
        price_cpu_min=red(np.minimum, t.price_cpu[rows]),
        reliability=red(np.add, t.reliability[rows]) / np.maximum(count, 1),
    )
