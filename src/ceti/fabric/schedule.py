"""One scheduling round: snapshot in, decisions out. Pure: no I/O, no clock, no database.

Per priority level, from the highest down (a lower priority only ever sees what the higher ones left):

1. group schedulable nodes with room into node classes (`classes.node_classes`, vectorised);
2. solve a min-cost flow from the level's job kinds to node classes (`flow.solve`);
3. pack each kind's jobs, in queue order, onto members of the classes the flow chose (`packing`);
4. spill: jobs the class-level estimate could not place try every node that could still fit them;
5. pre-empt strictly lower-priority interruptible work where that pays (`preemption`).

Multi-node gangs (`Job.one_per_node`) skip the flow: `multinode` places them first within their level.

Jobs no node could hold even empty are `Unschedulable`; the rest that did not start `Wait`, with a reason.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from operator import attrgetter

import numpy as np

from ceti.fabric import flow, kernels
from ceti.fabric.classes import JobKind, Need, NodeClasses, NodeTable, job_kinds, node_classes
from ceti.fabric.decisions import Decisions, Start, Unschedulable, Wait
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job, Node, Snapshot
from ceti.fabric.packing import Free
from ceti.fabric.preemption import Preemptor

MIN_ARCS_PER_KIND = 8  # the flow sees a kind's cheapest node classes: enough to hold its tasks twice over,
MAX_ARCS_PER_KIND = 256  # within these bounds
FLOW_SCAN_ROWS = 16  # members of a planned class one job looks at before moving on
MAX_MISSES = 8  # jobs in a row that find no room in a planned class close it for their kind (this round)
FLOW_ROUNDS = 2  # flow rounds per level, each on node classes rebuilt from what is left
# node checks per round for the exact spill (kinds in queue order use it up): a bound on its time. Compiled,
# a check costs about 10 ns; at 6,000,000 (sized when a check cost 50 ns) a 100k x 100k round left 9,000 jobs
# waiting that the room left would hold (84,417 tasks started against 93,558 now, for 0.1 s more)
SPILL_ROW_BUDGET = 20_000_000
SPILL_CHUNK_ROWS = 1024  # the spill reads a kind's candidate nodes in chunks of at least this many
GANG_SCAN_ROWS = 2048  # candidate rows a spilled gang kind reads first; four times as many more when it needs
_COST_SCALE = 50_000.0
_demand_of = attrgetter("demand")
_cpu = attrgetter("cpu_milli")
_mem = attrgetter("memory_mib")
_disk = attrgetter("disk_mib")
_bid = attrgetter("bid_per_hour")
_id = attrgetter("id")
_new_start = partial(tuple.__new__, Start)  # a Start from its five fields, without the keyword parsing
_share = attrgetter("gpu_share_milli")
_ok_key = attrgetter("ok_key")
_speed_key = attrgetter("speed_key")


def queue_order(job: Job) -> tuple[int, int]:
    """Higher priority first; within a priority, earlier submission first."""
    return (-job.priority, job.order)


def arc_cost(
    k: JobKind,
    price: np.ndarray,
    price_norm: float,
    speed: np.ndarray,
    reliability: np.ndarray,
    whole: np.ndarray,
    partial: np.ndarray,
) -> np.ndarray:
    """Cost of one task of a kind on a node class: the price of useful work, then fit.

    Useful work per hour is speed x the probability that the job finishes there (reliability, a per-hour
    figure, to the power of the kind's horizon, relative to the best candidate: long jobs shun flaky nodes,
    short ones hardly mind them); the cost is (1 + ask / the dearest ask) divided by it, so a faster model,
    a more reliable node and a cheaper ask each lower the cost, and no ask outweighs a GPU twice as fast.
    A small fragmentation term prefers tight fits: shares onto partly used GPUs, whole-GPU
    tasks onto nodes with the fewest spare whole GPUs, CPU-only work away from free GPUs.
    """
    cost = useful_work_cost(k, price, price_norm, speed, reliability)
    if k.gpu_count and k.gpu_share_milli:
        frag = np.where(partial >= k.gpu_share_milli, 0.0, 400.0) + 20.0 * whole
    elif k.gpu_count:
        frag = 40.0 * np.maximum(whole - k.gpu_count, 0)
    else:
        frag = 400.0 * whole
    return np.minimum(cost + frag, flow.MAX_ARC_COST).astype(np.int64)


def useful_work_cost(
    k: JobKind, price: np.ndarray, price_norm: float, speed: np.ndarray, reliability: np.ndarray
) -> np.ndarray:
    """`arc_cost` without its fragmentation term: (1 + ask / the dearest ask) over useful work per hour."""
    finish = np.clip(reliability, 0.05, 1.0)
    if k.horizon_h != 1.0 and len(finish):
        # relative to the likeliest finish among the candidates (in logs: r ** h underflows for long jobs), so
        # a long job still tells a steady node from a flaky one where both are likely to fail it
        log_p = k.horizon_h * np.log(finish)
        finish = np.clip(np.exp(log_p - log_p.max()), 0.05, 1.0)
    eff = np.maximum(speed * finish, 0.1)
    rel_price = price / price_norm if price_norm > 0 else np.zeros_like(price)
    return _COST_SCALE * (1.0 + rel_price) / eff


# ---------------------------------------------------------------- reasons


def static_misfit(
    t: NodeTable,
    d: Demand,
    gang: int,
    need: Need,
    rows: np.ndarray,
    weight: np.ndarray,
    usable: np.ndarray | None = None,
) -> str | None:
    """A human reason when no node could hold one task (or the whole gang) even if it were empty.

    `rows` are representatives of the distinct static node shapes, `weight` how many nodes each stands for;
    `usable` (optional) the GPUs per row that the demand may use.
    """
    if t.n == 0:
        return "no nodes are registered"
    ok = np.ones(len(rows), np.bool_)
    if d.regions:
        in_region = np.array([r in d.regions for r in t.region_names], np.bool_)
        ok &= in_region[t.region[rows]]
        if not ok.any():
            return f"no node in region {_names(d.regions)}"
    if d.features:
        ok &= need.region_ok[t.region[rows]]
        if not ok.any():
            return f"needs a node with {_names(d.features)}; none has it" + (
                " in the requested regions" if d.regions else ""
            )
    if d.node_ids:
        ok &= np.isin(rows, need.node_rows if need.node_rows is not None else [])
        if not ok.any():
            return f"none of the requested nodes ({_names(d.node_ids)}) is registered" + (
                " in the requested regions" if d.regions else ""
            )
    what = _gpu_words(d)
    if usable is None:
        usable = need.gpu_ok(t, rows).sum(axis=1) if d.gpu_count else np.zeros(len(rows), np.int64)
    if d.gpu_count:
        enough = usable >= (1 if d.gpu_share_milli and d.gpu_count == 1 else d.gpu_count)
        if not (ok & (usable > 0)).any():
            return f"needs {what}; no node has such a GPU"
        if not (ok & enough).any():
            return f"needs {what}; the largest such node has {int(usable[ok].max())}"
        ok &= enough
    for name, v, have, unit, u in (
        ("CPUs", d.cpu_milli, t.cpu_total, 1000, ""),
        ("memory", d.memory_mib, t.mem_total, 1024, " GiB"),
        ("disk", d.disk_mib, t.disk_total, 1024, " GiB"),
    ):
        if v <= 0:
            continue
        h = have[rows]
        if not (ok & (h >= v)).any():
            most = int(h[ok].max()) if ok.any() else 0
            return (
                f"needs {_num(v / unit)}{u} {name}"
                + (f" with {what}" if d.gpu_count else "")
                + f"; the largest eligible node has {_num(most / unit)}{u}"
            )
        ok &= h >= v
    if gang > 1:
        r = rows[ok]
        per = np.full(len(r), 1 << 20, np.int64)
        for v, have in ((d.cpu_milli, t.cpu_total), (d.memory_mib, t.mem_total), (d.disk_mib, t.disk_total)):
            if v > 0:
                per = np.minimum(per, have[r] // v)
        if d.gpu_count:
            u = usable[ok]
            if d.gpu_share_milli and d.gpu_count == 1:
                per = np.minimum(per, u * (WHOLE_GPU_MILLI // d.gpu_share_milli))
            else:
                per = np.minimum(per, u // d.gpu_count)
        total = int((per * weight[ok]).sum())
        if total < gang:
            return f"a gang of {gang} tasks needs room for all at once; even an empty network holds {total}"
    return None


def _names(xs: frozenset[str]) -> str:
    items = sorted(xs)
    return "|".join(items[:5]) + ("|..." if len(items) > 5 else "")


def _num(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def _gpu_words(d: Demand) -> str:
    model = f" of {_names(d.gpu_models)}" if d.gpu_models else ""
    vram = f" with >= {_num(d.min_vram_mib / 1024)} GiB VRAM" if d.min_vram_mib else ""
    s = "s" if d.gpu_count > 1 else ""
    if d.gpu_share_milli:
        return f"{d.gpu_share_milli / 10:g}% of {d.gpu_count} GPU{s}{model}{vram}"
    return f"{d.gpu_count} GPU{s}{model}{vram}"


def _shape(d: Demand, gang: int) -> str:
    parts = [f"{_num(d.cpu_milli / 1000)} CPUs", f"{_num(d.memory_mib / 1024)} GiB"]
    if d.gpu_count:
        parts.insert(0, _gpu_words(d))
    s = ", ".join(parts)
    return f"{gang} tasks of {s}" if gang > 1 else s


# ---------------------------------------------------------------- the round


class _Round:
    def __init__(self, snapshot: Snapshot, placement: str = "flow") -> None:
        need_vram = any(j.demand.min_vram_mib for j in snapshot.pending)
        self.t = t = NodeTable(snapshot.nodes, need_vram=need_vram)
        self.free = Free(t, snapshot.running)
        self.decisions = Decisions()
        # starts to write, in order (`_started`, `_flush`)
        self.deferred = _DeferredStarts(self.decisions.starts)
        self.preemptor = Preemptor(t, self.free, snapshot.running, self.decisions, self.deferred.add)
        self.pg: list[float] = t.price_gpu.tolist()
        self.pc: list[float] = t.price_cpu.tolist()
        self.max_pg = float(t.price_gpu.max(initial=0.0))
        self.max_pc = float(t.price_cpu.max(initial=0.0))
        # what the compiled loops read of the nodes and price arcs with
        self.node_cols = kernels.Nodes(
            t.gpu_model, t.gpu_vram, t.price_gpu, t.price_cpu, t.homogeneous, t.gpu_type
        )
        self.pricing = kernels.Pricing(self.max_pg, self.max_pc, flow.MAX_ARC_COST, _COST_SCALE)
        self.left = _JobsLeft(snapshot.pending)  # id(kind) -> jobs not placed yet, in queue order
        self.pending = snapshot.pending
        self._job_cols: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._index: dict[int, int] | None = None  # id(job) -> its position in `pending`
        self.needs: dict[int, Need] = {}  # id(kind) -> its constraints as lookups
        self._usable_cache: dict[tuple, np.ndarray] = {}
        self._cls_of: NodeClasses | None = None
        self._cls_cache: dict[tuple, np.ndarray] = {}
        self.spill_budget = SPILL_ROW_BUDGET
        # reliability splits node classes only when some job's duration makes it matter more than its ask
        self.by_reliability = any(j.expected_duration_h is not None for j in snapshot.pending)
        self.snapshot = snapshot
        self.per_task_policy: str | None = None  # the policy that places this round task by task, if any
        if placement != "flow":
            from ceti.fabric import per_task  # here, not above: it reads this module's costs

            per_task.check_placement(placement)
            tasks = sum(max(1, j.gang_size) for j in snapshot.pending)
            if per_task.fits_round(t.n, tasks, int(t.gpu_count.max(initial=0))):
                self.per_task_policy = placement

    # ---- small helpers ----
    def price_ok(self, job: Job, r: int) -> bool:
        bid = job.bid_per_hour
        if bid is None:
            return True
        d = job.demand
        price = d.gpu_count * self.pg[r] + d.cpu_milli / 1000.0 * self.pc[r]
        return price * job.gang_size <= bid + 1e-9

    def _commit(self, job: Job, placed: list[tuple[int, list[int]]]) -> None:
        self._flush()
        t = self.t
        share = job.demand.gpu_share_milli
        starts = self.decisions.starts
        ids = t.ids
        for task, (r, pos) in enumerate(placed):
            starts.append(Start(job.id, ids[r], t.gpu_indices(r, pos) if pos else (), share, task))

    # ---- the flow between classes ----
    def _plan(
        self, level: list[Need], nc: NodeClasses, cols: _JobColumns
    ) -> list[list[tuple[int, int, int]]]:
        """Per kind: (cost, node class, tasks) chosen by the min-cost flow.

        A kind's arcs go to the classes in its places whose GPUs it may use, that could hold one of its tasks
        (CPU and memory by the class mean: the min would starve coarse classes; packing checks exactly) and,
        where every job of the kind bids, whose cheapest asks are within its highest bid; the cheapest of them
        (`arc_cost`) until they could hold twice its tasks, within MIN/MAX_ARCS_PER_KIND. Where every job of
        the kind bids, a bid is the price it accepts, so the classes it affords are as good to it and speed,
        reliability and fit decide (sending such jobs to the cheapest classes first took those from the jobs
        that could afford nothing else, per_task). Compiled: `kernels.plan_arcs`.
        """
        C = nc.size
        J = len(level)
        plans: list[list[tuple[int, int, int]]] = [[] for _ in level]
        if C == 0:
            return plans
        supply = np.zeros(J, np.int64)
        size = np.ones(J, np.int64)
        k_cpu = np.zeros(J)
        k_mem = np.zeros(J)
        k_least = np.zeros(J)
        k_bid = np.zeros(J)
        k_horizon = np.ones(J)
        k_ok = np.full(J, -1, np.int64)
        k_speed = np.zeros(J, np.int64)
        arcs_of: list[int] = []
        for j, need in enumerate(level):
            k = need.kind
            supply[j] = self.left.count(id(k)) * k.gang_size
            if supply[j] and not k.node_ids:  # kinds pinned to node ids go straight to the exact pass
                arcs_of.append(j)
        if not arcs_of:
            return plans
        # what the kinds' jobs not placed yet ask: mean CPU and memory, least CPU, and the highest bid per task
        # (inf when one has none)
        sub = cols.subset(arcs_of)
        k_jobs, j_cpu, j_mem, j_bid = sub.k_jobs, sub.cpu, sub.mem, sub.bid
        starts, n_jobs = k_jobs[:-1], np.diff(k_jobs)
        gang = np.array([level[j].kind.gang_size for j in arcs_of], np.int64)
        k_cpu[arcs_of] = np.add.reduceat(j_cpu, starts) / n_jobs
        k_mem[arcs_of] = np.add.reduceat(j_mem, starts) / n_jobs
        k_least[arcs_of] = np.minimum.reduceat(j_cpu, starts)
        k_bid[arcs_of] = np.maximum(np.maximum.reduceat(j_bid / np.repeat(gang, n_jobs), starts), 0.0)
        for j in arcs_of:
            k = level[j].kind
            k_horizon[j] = k.horizon_h
            if k.gpu_count:
                size[j] = k.gpu_count * -(-(k.gpu_share_milli or WHOLE_GPU_MILLI) // 100)
            else:
                size[j] = max(1, -(-int(k_cpu[j]) // 1000))
        arc_needs = [level[j] for j in arcs_of]
        ok_rows, k_ok[arcs_of] = self._per_kind(arc_needs, nc, _ok_key, self._class_ok)
        speed_rows, k_speed[arcs_of] = self._per_kind(arc_needs, nc, _speed_key, self._class_speed)
        kinds = [need.kind for need in level]
        most = int(np.minimum(np.where(k_ok >= 0, C, 0), MAX_ARCS_PER_KIND).sum())
        aj = np.empty(most, np.int64)
        ac = np.empty(most, np.int64)
        acap = np.empty(most, np.int64)
        acost = np.empty(most, np.int64)
        flow_kinds = kernels.FlowKinds(
            supply, k_cpu, k_mem, k_least, k_bid, np.array([k.gpu_count for k in kinds], np.int64),
            np.array([k.gpu_share_milli for k in kinds], np.int64), k_horizon, k_ok, k_speed, ok_rows, speed_rows,
        )  # fmt: skip
        n = kernels.plan_arcs(
            flow_kinds, nc.columns(), self.pricing, MIN_ARCS_PER_KIND, MAX_ARCS_PER_KIND,
            kernels.Arcs(aj, ac, acap, acost),
        )  # fmt: skip
        if not n:
            return plans
        aj, ac, acost = aj[:n], ac[:n], acost[:n]
        room = np.concatenate(
            [
                nc.count * (nc.whole * 10 + nc.partial_min // 100),
                (nc.count * np.maximum(nc.cpu_mean, 0) // 1000).astype(np.int64),
            ]
        )
        sent = flow.solve(supply, size, aj, ac, acap[:n], acost, room)
        for a in np.flatnonzero(sent > 0).tolist():
            plans[int(aj[a])].append((int(acost[a]), int(ac[a]) % C, int(sent[a])))
        for p in plans:
            p.sort()
        return plans

    # ---- per node classes, shared by the kinds that ask the same (thousands of kinds, a few distinct asks) ----
    def _per_classes(self, nc: NodeClasses, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
        if self._cls_of is not nc:
            self._cls_of = nc
            self._cls_cache.clear()
        got = self._cls_cache.get(key)
        if got is None:
            got = self._cls_cache[key] = make()
        return got

    def _per_kind(
        self,
        needs: list[Need],
        nc: NodeClasses,
        key_of: Callable[[Need], tuple],
        lookup: Callable[[Need, NodeClasses], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """`lookup` per kind as `_distinct` gives it (one row per distinct array, each kind's row), called once
        per distinct `key_of` (what the lookup depends on) rather than once per kind."""
        first: dict[tuple, int] = {}
        reps: list[Need] = []
        index: list[int] = []
        for need, key in zip(needs, map(key_of, needs), strict=True):
            r = first.get(key)
            if r is None:
                r = first[key] = len(reps)
                reps.append(need)
            index.append(r)
        return np.stack([lookup(need, nc) for need in reps]), np.array(index, np.int64)

    def _class_ok(self, need: Need, nc: NodeClasses) -> np.ndarray:
        """Classes in the kind's places whose GPUs it may use (read only)."""
        k = need.kind
        gpus = (k.gpu_models, k.min_vram_mib) if need.constrained_gpus else bool(k.gpu_count)

        def make() -> np.ndarray:
            ok = need.region_ok[nc.region]
            if need.constrained_gpus:
                ok = ok & need.type_ok(self.t)[nc.gpu_type]
            elif k.gpu_count:
                ok = ok & (self.t.gpu_count[nc.sample] > 0)
            return ok

        return self._per_classes(nc, ("ok", k.regions, k.features, gpus), make)

    def _class_gpu_copies(self, count: int, share: int, nc: NodeClasses) -> np.ndarray:
        """Tasks of `count` GPUs (whole, or `share` of each) that the conservative member of a class holds."""

        def make() -> np.ndarray:
            if share and count == 1:
                return nc.whole * (WHOLE_GPU_MILLI // share) + nc.partial_min // share
            if share:
                return (nc.whole + (nc.partial_min >= share)) // count
            return nc.whole // count

        return self._per_classes(nc, ("gpus", count, share), make)

    def _class_speed(self, need: Need, nc: NodeClasses) -> np.ndarray:
        k = need.kind
        if not k.speed_by_model or not k.gpu_count:
            return self._per_classes(nc, ("speed",), lambda: np.ones(nc.size, np.float64))
        return self._per_classes(
            nc, ("speed", k.speed_by_model), lambda: need.class_speed(self.t, nc.gpu_type, nc.sample)
        )

    def _pack_level(
        self, active: list[Need], plans: list[list[tuple[int, int, int]]], nc: NodeClasses, cols: _JobColumns
    ) -> int:
        """Each kind's jobs onto the classes the flow chose, cheapest class first, kinds in level order; returns
        the tasks placed.

        Per class, jobs in queue order; a job looks at up to FLOW_SCAN_ROWS members from the class's cursor
        for what the kind asks of the GPUs (members before it have no such GPUs left: free room only shrinks
        while classes are packed, so every kind asking the same may skip them); members at the cursor that no
        longer have the kind's GPUs move it on for good; MAX_MISSES jobs in a row that lack room close the
        class for the kind (a later flow round re-plans; a job that only could not afford the members is no
        miss). Gangs are all or nothing, their tasks on one node or several. Class by class rather than job by
        job: the classes are disjoint, so a job meets each class in the same state either way.

        The loop runs once per placed job, so it is compiled (`kernels`) and called once per flow round:
        this method turns the kinds into columns and the placements back into decisions. `cols`: the jobs of
        `active`, which no one placed since.
        """
        t = self.t
        f = self.free
        which = [i for i, plan in enumerate(plans) if plan]
        if not which:
            return 0
        batch = [(active[i], plans[i]) for i in which]
        K = len(batch)
        sub = cols.subset(which)
        kinds = [need.kind for need, _ in batch]
        kind_cols = _kind_columns([need for need, _ in batch], sub.k_jobs)
        p_class: list[int] = []
        p_quota: list[int] = []
        p_slot: list[int] = []
        k_plans = np.zeros(K + 1, np.int64)
        slots: dict[tuple, int] = {}
        for i, (need, plan) in enumerate(batch):
            k = need.kind
            gpu_need = (k.gpu_count, k.gpu_share_milli, k.gpu_models, k.min_vram_mib) if k.gpu_count else None
            for _, c, quota in plan:
                p_class.append(c)
                p_quota.append(quota)
                p_slot.append(-1 if gpu_need is None else slots.setdefault((c, gpu_need), len(slots)))
            k_plans[i + 1] = len(p_class)
        cursors = np.array([nc.gpu_cursor.get(key, 0) for key in slots], np.int64)
        tasks = int((np.diff(sub.k_jobs) * kind_cols.gang).sum())
        out_job = np.empty(tasks, np.int64)
        out_row = np.empty(tasks, np.int64)
        out_gpus = np.empty((tasks, max(t.G, 1)), np.int64)
        out_task = np.empty(tasks, np.int64)
        n_out = kernels.pack_kinds(
            f.arrays(), self.node_cols, nc.rows, nc.bounds, kind_cols, sub.columns(), k_plans,
            np.array(p_class, np.int64), np.array(p_quota, np.int64), np.array(p_slot, np.int64), cursors,
            FLOW_SCAN_ROWS, MAX_MISSES, kernels.Placements(out_job, out_row, out_gpus, out_task),
        )  # fmt: skip
        for key, v in zip(slots, cursors.tolist(), strict=True):
            nc.gpu_cursor[key] = v
        if n_out:
            counts = kind_cols.count[np.searchsorted(sub.k_jobs, out_job[:n_out], side="right") - 1]
            self._placed(
                kinds, sub, out_job[:n_out], out_row[:n_out], out_gpus[:n_out], out_task[:n_out], counts
            )
        return n_out

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every pending job's CPU, memory, disk and bid (inf: none) by its position in `pending`, read once a
        round: a kind's jobs are then a gather by their positions (`_left_at`)."""
        if self._job_cols is None:
            pending = self.pending
            n = len(pending)
            demands = list(map(_demand_of, pending))
            self._job_cols = (
                np.fromiter(map(_cpu, demands), np.int64, n),
                np.fromiter(map(_mem, demands), np.int64, n),
                np.fromiter(map(_disk, demands), np.int64, n),
                np.array([math.inf if b is None else b for b in map(_bid, pending)], np.float64),
            )
        return self._job_cols

    def _left_at(self, k: JobKind) -> np.ndarray:
        """Positions in `pending` of the kind's jobs not placed yet; looked up where code set the list without
        them (per-task placement, pinned gangs)."""
        at = self.left.positions(id(k))
        if at is None:
            at = self._at_of(self.left[id(k)])
            self.left.know_positions(id(k), at)
        return at

    def _least(self, k: JobKind) -> tuple[int, int]:
        """The smallest CPU and memory among the kind's jobs not placed yet."""
        at = self._left_at(k)
        cpu, mem, _, _ = self._columns()
        return int(cpu[at].min()), int(mem[at].min())

    def _at_of(self, jobs: list[Job]) -> np.ndarray:
        """The positions in `pending` of `jobs`."""
        if self._index is None:
            self._index = dict(zip(map(id, self.pending), range(len(self.pending)), strict=True))
        return np.fromiter(map(self._index.__getitem__, map(id, jobs)), np.int64, len(jobs))

    def _job_columns(self, needs: list[Need]) -> _JobColumns:
        """The kinds' jobs not placed yet as columns for compiled code."""
        cpu, mem, disk, bid = self._columns()
        kinds = [need.kind for need in needs]
        ats = [self._left_at(k) for k in kinds]
        at = np.concatenate(ats) if ats else np.zeros(0, np.int64)
        k_jobs = np.zeros(len(needs) + 1, np.int64)
        k_jobs[1:] = np.cumsum([len(a) for a in ats])
        return _JobColumns(self.pending, at, k_jobs, cpu[at], mem[at], disk[at], bid[at])

    def _placed(
        self,
        kinds: list[JobKind],
        cols: _JobColumns,
        job_of: np.ndarray,
        rows: np.ndarray,
        positions: np.ndarray,
        tasks: np.ndarray,
        counts: np.ndarray | int,
    ) -> None:
        """Placements made by compiled code over `cols` (the columns of `kinds`), as decisions (`_started`), and
        the jobs that started dropped from the kinds' lists."""
        self._started(partial(cols.jobs_at, job_of), rows, positions, tasks, counts)
        placed = np.zeros(len(cols.at), np.bool_)
        placed[job_of] = True
        flags = placed.tolist()
        k_jobs = cols.k_jobs
        for i, k in enumerate(kinds):
            lo, hi = int(k_jobs[i]), int(k_jobs[i + 1])
            if any(flags[lo:hi]):
                # the positions stand for the list until someone reads it (most kinds are read as columns)
                self.left[id(k)] = cols.at[lo:hi][~placed[lo:hi]]

    def _started(
        self,
        jobs: list[Job] | Callable[[], list[Job]],
        rows: np.ndarray,
        positions: np.ndarray,
        tasks: np.ndarray,
        counts: np.ndarray | int,
    ) -> None:
        """Placements made in the arrays by compiled code: the residual's Python side brought up to date now,
        and one `Start` per placement written later, in order (`_flush`): task `tasks[i]` of `jobs[i]` (or of
        what `jobs()` returns) on row `rows[i]`, the GPUs at its first `counts[i]` positions, or `counts` for
        all. The arrays must not change after the call."""
        self.free.absorb(rows)
        self.deferred.writes.append(partial(self._write_starts, jobs, rows, positions, tasks, counts))

    def _write_starts(
        self,
        jobs: list[Job] | Callable[[], list[Job]],
        rows: np.ndarray,
        positions: np.ndarray,
        tasks: np.ndarray,
        counts: np.ndarray | int,
    ) -> None:
        t = self.t
        placed_jobs = jobs if isinstance(jobs, list) else jobs()
        n = len(placed_jobs)
        counts = np.full(n, counts, np.int64) if isinstance(counts, int) else counts
        gpus: list[tuple[int, ...]] = [()] * n
        for count in np.unique(counts[counts > 0]).tolist():
            sel = np.flatnonzero(counts == count)
            if t.indices_are_positions:
                # one tuple per distinct choice, shared by the starts that make it: a round keeps about a
                # hundred thousand starts, and the cyclic collector walks each object they hold once after it
                chosen = np.sort(positions[sel, :count], axis=1)
                if (t.G + 1) ** count < 1 << 62:
                    code = chosen @ (t.G + 1) ** np.arange(count, dtype=np.int64)
                    _, first, which = np.unique(code, return_index=True, return_inverse=True)
                else:
                    _, first, which = np.unique(chosen, axis=0, return_index=True, return_inverse=True)
                shared = list(map(tuple, chosen[first].tolist()))
                for i, g in zip(
                    sel.tolist(), map(shared.__getitem__, which.reshape(-1).tolist()), strict=True
                ):
                    gpus[i] = g
            else:
                for i, r, g in zip(
                    sel.tolist(), rows[sel].tolist(), positions[sel, :count].tolist(), strict=True
                ):
                    gpus[i] = t.gpu_indices(r, g)
        self.decisions.starts.extend(
            map(
                _new_start,
                zip(
                    map(_id, placed_jobs),
                    map(t.ids.__getitem__, rows.tolist()),
                    gpus,
                    map(_share, map(_demand_of, placed_jobs)),
                    tasks.tolist(),
                    strict=True,
                ),
            )
        )

    def _flush(self) -> None:
        """Write the starts deferred so far, in the order they were made. Code that appends decisions itself
        calls it first."""
        self.deferred.flush()

    def _beside(self, kernel: Callable[..., int], *args: object) -> int:
        """`kernel(*args)`: compiled code that releases the GIL, run on a second thread while this one writes
        the deferred starts, so the round uses both CPUs. The kernel changes only the arrays it is given; writing
        starts reads none of them."""
        if not self.deferred.writes:
            return kernel(*args)
        got: list[tuple[bool, object]] = []

        def call() -> None:
            try:
                got.append((True, kernel(*args)))
            except Exception as e:  # noqa: BLE001 -- raised again on the round's thread, below
                got.append((False, e))

        worker = threading.Thread(target=call, name="ceti-fabric-kernel", daemon=True)
        worker.start()
        try:
            self._flush()
        finally:
            worker.join()
        ok, value = got[0]
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    # ---- the spill: every node that could still fit, cheapest first ----
    def _spill_level(self, level: list[Need], nc: NodeClasses) -> None:
        """Jobs the flow left, kind by kind in level order: runs of kinds on node classes through the compiled
        spill (`kernels.spill_kinds`), kinds pinned to nodes through `_spill_pinned`."""
        batch: list[Need] = []
        for need in level:
            if not self.left.count(id(need.kind)):
                continue
            if need.node_rows is None:
                batch.append(need)
                continue
            if batch:
                self._spill_kinds(batch, nc)
                batch = []
            self._spill_pinned(need)
        if batch:
            self._spill_kinds(batch, nc)

    def _spill_kinds(self, needs: list[Need], nc: NodeClasses) -> None:
        """The spill for a run of kinds not pinned to nodes, in one compiled call."""
        if nc.size == 0:
            return
        t = self.t
        cols = self._job_columns(needs)
        kinds = [need.kind for need in needs]
        kind_cols = _kind_columns(needs, cols.k_jobs)
        places, k_place = _distinct([need.region_ok for need in needs])
        any_type = np.ones(len(t.type_first_row), np.bool_)  # not read for a kind that may use any GPU
        types, k_type = _distinct([need.type_ok(t) if need.constrained_gpus else any_type for need in needs])
        speeds, k_speed = self._per_kind(needs, nc, _speed_key, self._class_speed)
        budget = np.array([self.spill_budget], np.int64)
        asks: dict[tuple, int] = {}  # kinds that ask the same of a node share their failures in the spill
        k_ask = np.array([asks.setdefault((k.gang_size, k.node_ask), len(asks)) for k in kinds], np.int64)
        tasks = int((np.diff(cols.k_jobs) * kind_cols.gang).sum())
        out_job = np.empty(tasks, np.int64)
        out_row = np.empty(tasks, np.int64)
        out_gpus = np.empty((tasks, max(t.G, 1)), np.int64)
        out_task = np.empty(tasks, np.int64)
        lookups = kernels.KindLookups(
            k_place, places, k_type, types, k_speed, speeds, np.array([k.horizon_h for k in kinds]),
            np.logical_or.reduceat(cols.bid == math.inf, cols.k_jobs[:-1]), k_ask,
        )  # fmt: skip
        n_out = self._beside(
            kernels.spill_kinds,
            self.free.arrays(), self.node_cols, self.free.gpu_summary(), nc.columns(), kind_cols, lookups,
            cols.columns(), self.pricing, SPILL_CHUNK_ROWS, GANG_SCAN_ROWS, budget,
            kernels.Placements(out_job, out_row, out_gpus, out_task),
        )  # fmt: skip
        self.spill_budget = int(budget[0])
        if not n_out:
            return
        counts = kind_cols.count[np.searchsorted(cols.k_jobs, out_job[:n_out], side="right") - 1]
        self._placed(
            kinds, cols, out_job[:n_out], out_row[:n_out], out_gpus[:n_out], out_task[:n_out], counts
        )

    def _spill_pinned(self, need: Need) -> None:
        """The spill for a kind pinned to node ids: every one of its nodes that takes new work and has room,
        each job in queue order onto the first that fits it (`kernels.spill_rows`, which keeps the nodes with
        room itself); gangs scan node by node (`_spill_rows_scan`)."""
        k = need.kind
        jobs = self.left[id(k)]
        if not jobs or need.node_rows is None:
            return
        t = self.t
        rows_a = need.node_rows[t.schedulable[need.node_rows]]
        rows_a = rows_a[need.place_ok(t, rows_a)]
        if k.gang_size > 1:
            self.left[id(k)] = self._spill_rows_scan(need, jobs, self._with_room(need, jobs, rows_a))
            return
        f = self.free
        cols = self._job_columns([need])
        m = len(jobs)
        out_job = np.empty(m, np.int64)
        out_row = np.empty(m, np.int64)
        out_gpus = np.empty((m, max(t.G, 1)), np.int64)
        any_type = np.ones(len(t.type_first_row), np.bool_)
        n_out = kernels.spill_rows(
            f.arrays(), self.node_cols, f.gpu_summary(), rows_a, _gpu_ask(need),
            need.type_ok(t) if need.constrained_gpus else any_type,
            cols.columns(),
            kernels.Placements(out_job, out_row, out_gpus, np.zeros(m, np.int64)),
        )  # fmt: skip
        if n_out:
            self._placed(
                [k],
                cols,
                out_job[:n_out],
                out_row[:n_out],
                out_gpus[:n_out],
                np.zeros(n_out, np.int64),
                k.gpu_count,
            )

    def _spill_rows_scan(self, need: Need, jobs: list[Job], rows_a: np.ndarray) -> list[Job]:
        """The spill of a pinned gang kind on `rows_a`: node by node, a gang's tasks may share a node
        (`kernels.spill_gang`); returns the jobs not placed."""
        k = need.kind
        t = self.t
        room = self.free.arrays()
        ask = _gpu_ask(need)
        # a bid job only looks at the nodes it can afford: one filtered array (and cursor) per (CPUs, bid)
        lists: dict[tuple[int, float], list] = {}
        left: list[Job] = []
        failed: list[tuple[int, int, int, float]] = []
        dead = np.zeros(t.n, np.bool_)  # nodes seen without the GPUs the kind asks for
        gang = k.gang_size
        g_rows = np.empty(gang, np.int64)
        g_pos = np.empty((gang, max(t.G, 1)), np.int64)
        for job in jobs:
            d = job.demand
            if job.bid_per_hour is None:
                cursor = lists.get((0, math.inf)) or lists.setdefault((0, math.inf), [0, rows_a])
            else:
                key = (d.cpu_milli, job.bid_per_hour)
                cursor = lists.get(key)
                if cursor is None:
                    price = k.gpu_count * t.price_gpu[rows_a] + d.cpu_milli / 1000.0 * t.price_cpu[rows_a]
                    cursor = lists[key] = [0, rows_a[price * gang <= job.bid_per_hour + 1e-9]]
            if cursor[0] >= len(cursor[1]):
                left.append(job)
                continue
            lim = math.inf if job.bid_per_hour is None else job.bid_per_hour
            if any(
                d.cpu_milli >= fc and d.memory_mib >= fm and d.disk_mib >= fd and lim <= fl
                for fc, fm, fd, fl in failed
            ):
                left.append(job)
                continue
            ok, cursor[0] = kernels.spill_gang(
                room, self.node_cols, ask, gang, cursor[1], cursor[0], dead, d.cpu_milli, d.memory_mib, d.disk_mib,
                g_rows, g_pos,
            )  # fmt: skip
            if not ok:
                left.append(job)
                failed.append((d.cpu_milli, d.memory_mib, d.disk_mib, lim))
            else:
                self._started([job] * gang, g_rows.copy(), g_pos.copy(), np.arange(gang), k.gpu_count)
        return left

    def _with_room(self, need: Need, jobs: list[Job], rows: np.ndarray) -> np.ndarray:
        """The rows that have room now for the smallest job of the kind (exact, vectorised)."""
        cpu, mem, disk, _ = self.free.arrays()
        k = need.kind
        keep = cpu[rows] >= min(x.demand.cpu_milli for x in jobs)
        keep &= mem[rows] >= min(x.demand.memory_mib for x in jobs)
        dk = min(x.demand.disk_mib for x in jobs)
        if dk > 0:
            keep &= disk[rows] >= dk
        if k.gpu_count:
            keep &= self._gpu_fit(need, rows) >= k.gpu_count
        return rows[keep]

    def _gpu_fit(self, need: Need, rows: np.ndarray) -> np.ndarray:
        """Per row, how many GPUs could take one more of the kind's per-GPU milli (exact for a single share or
        whole GPUs of any model: from per-node summaries; else from the per-GPU matrix)."""
        k = need.kind
        share = k.gpu_share_milli
        t = self.t
        if not share or k.gpu_count == 1:
            whole, most = self.free.gpu_summary()
            fit = whole[rows] if not share else (most[rows] >= share).astype(np.int64)
            if not need.constrained_gpus:
                return fit
            # a node whose GPUs are all of one type may use all of them or none: its type says which
            fit = np.where(need.type_ok(t)[t.gpu_type[rows]], fit, 0)
            mixed = ~t.homogeneous[rows]
            if not mixed.any():
                return fit
            fit[mixed] = self._gpu_fit_exact(need, rows[mixed])
            if share:  # as for the others: whether one more share fits, not on how many GPUs
                fit = np.minimum(fit, 1)
            return fit
        return self._gpu_fit_exact(need, rows)

    def _gpu_fit_exact(self, need: Need, rows: np.ndarray) -> np.ndarray:
        """`_gpu_fit` from the per-GPU matrix."""
        gpu = self.free.arrays()[3]
        ok = need.gpu_ok(self.t, rows) if need.constrained_gpus else self.t.gpu_valid[rows]
        return (ok & (gpu[rows] >= (need.kind.gpu_share_milli or WHOLE_GPU_MILLI))).sum(axis=1)

    # ---- the round ----
    def _unschedulable(self, kinds: list[JobKind]) -> None:
        t = self.t
        dec = self.decisions
        self.shapes = t.shape_groups()
        rows, weight, _, _ = self.shapes
        cache: dict[tuple, str | None] = {}
        # the largest CPU, memory and disk of each kind: a node that holds that holds every job of the kind, so
        # most kinds need one check, not one per distinct job shape
        ats = [np.array(k.at, np.int64) if len(k.at) == len(k.jobs) else self._at_of(k.jobs) for k in kinds]
        at = np.concatenate(ats) if ats else np.zeros(0, np.int64)
        firsts = np.cumsum([0] + [len(a) for a in ats[:-1]])
        cpu, mem, disk, _ = self._columns()
        biggest_cpu, biggest_mem, biggest_disk = (
            np.maximum.reduceat(col[at], firsts) if len(at) else np.zeros(0, np.int64)
            for col in (cpu, mem, disk)
        )
        needs = [Need(t, k) for k in kinds]
        fits = self._static_fits(needs, biggest_cpu, biggest_mem, biggest_disk)
        biggest_cpu, biggest_mem, biggest_disk = (
            biggest_cpu.tolist(),
            biggest_mem.tolist(),
            biggest_disk.tolist(),
        )
        for i, (k, need) in enumerate(zip(kinds, needs, strict=True)):
            self.needs[id(k)] = need
            if fits[i]:  # what `static_misfit` would say of the kind's largest ask: nothing
                self.left[id(k)] = ats[i]
                continue
            r, w = (rows, weight)
            if need.node_rows is not None:
                r, w = need.node_rows, np.ones(len(need.node_rows), np.int64)
            base = (k.gang_size, *k.node_ask)
            d0 = k.jobs[0].demand
            biggest = Demand(
                biggest_cpu[i],
                biggest_mem[i],
                d0.gpu_count,
                d0.gpu_share_milli,
                d0.gpu_models,
                d0.min_vram_mib,
                biggest_disk[i],
                d0.regions,
                d0.node_ids,
                d0.features,
            )
            usable = self._usable_gpus(need, r)
            # kinds that differ only in priority, speed or horizon ask the same question
            big_key = (base, biggest.cpu_milli, biggest.memory_mib, biggest.disk_mib)
            if big_key in cache:
                fits_all = cache[big_key] is None
            else:
                why = cache[big_key] = static_misfit(t, biggest, k.gang_size, need, r, w, usable)
                fits_all = why is None
            if fits_all:
                self.left[id(k)] = ats[i]
                continue
            keep: list[Job] = []
            kept = np.ones(len(k.jobs), np.bool_)
            for x, j in enumerate(k.jobs):
                d = j.demand
                key = (base, d.cpu_milli, d.memory_mib, d.disk_mib)
                if key in cache:
                    why = cache[key]
                else:
                    why = cache[key] = static_misfit(t, d, k.gang_size, need, r, w, usable)
                if why:
                    dec.unschedulable.append(Unschedulable(j.id, why))
                    kept[x] = False
                else:
                    keep.append(j)
            self.left[id(k)] = ats[i][kept]

    def _static_fits(
        self, needs: list[Need], k_cpu: np.ndarray, k_mem: np.ndarray, k_disk: np.ndarray
    ) -> list[bool]:
        """Per kind, whether `static_misfit` of its largest ask (`k_*`) is None, for all kinds in one compiled
        call; False (ask `static_misfit`) for kinds pinned to nodes, whose rows are their own."""
        K = len(needs)
        if not K or not self.t.n:
            return [False] * K
        t = self.t
        rows, weight, _, _ = self.shapes
        places, k_place = _distinct([need.region_ok for need in needs])
        none = np.zeros(len(rows), np.int64)
        usable, k_usable = _distinct(
            [self._usable_gpus(need, rows) if need.kind.gpu_count else none for need in needs]
        )
        kinds = [need.kind for need in needs]
        out = np.zeros(K, np.bool_)
        kernels.static_fits(
            t.region[rows], t.cpu_total[rows], t.mem_total[rows], t.disk_total[rows], weight, places, k_place,
            usable, k_usable, np.array([k.gpu_count for k in kinds], np.int64),
            np.array([k.gpu_share_milli for k in kinds], np.int64), k_cpu, k_mem, k_disk,
            np.array([k.gang_size for k in kinds], np.int64), out,
        )  # fmt: skip
        out &= np.array([need.node_rows is None for need in needs], np.bool_)
        return out.tolist()

    def run(self) -> Decisions:
        # the placers hold the round: locals, so the round holds none of them (no cycle to outlive `run`)
        placer = None
        if self.per_task_policy is not None:
            from ceti.fabric import per_task

            placer = per_task.PerTaskPlacer(self, self.per_task_policy, self.snapshot)
        # the kinds' positions (`JobKind.at`) index `pending`: the columns are read by them
        kinds = job_kinds(self.pending)
        multi = None
        if any(k.gang_size > 1 for k in kinds):
            from ceti.fabric import multinode  # here, not above: it reuses this module's reason texts

            kinds, gangs = multinode.split(kinds)
            multi = multinode.MultiNode(self, gangs) if gangs else None
        self._unschedulable(kinds)
        needs = [self.needs[id(k)] for k in kinds if self.left.count(id(k))]
        levels: list[list[Need]] = []
        for need in needs:
            if levels and levels[-1][0].kind.priority == need.kind.priority:
                levels[-1].append(need)
            else:
                levels.append([need])
        for level in levels:
            if multi is not None:  # multi-node gangs of this level and the levels above go first
                self._flush()
                multi.place(down_to=level[0].kind.priority)
            if placer is not None:
                self._flush()
                placer.place_level(level)
            else:
                self._flow_level(level)
            for need in level:
                if self.left.count(id(need.kind)) and self.preemptor.may_open(need.kind.priority):
                    left = self.left[id(need.kind)]
                    n = self.preemptor.place(need, left, self.price_ok, partial(self._least, need.kind))
                    if n:
                        self.left.drop_first(id(need.kind), n)
        self._flush()
        if multi is not None:
            multi.finish()
        self._waits(needs)
        return self.decisions

    def _flow_level(self, level: list[Need]) -> None:
        """Min-cost flow rounds between the level's kinds and node classes, packing, then the spill."""
        t = self.t
        fresh = False
        for _ in range(FLOW_ROUNDS):
            nc = node_classes(t, *self.free.arrays(), by_reliability=self.by_reliability)
            active = [need for need in level if self.left.count(id(need.kind))]
            cols = self._job_columns(active)
            plans = self._plan(active, nc, cols)
            fresh = not self._pack_level(active, plans, nc, cols)
            if fresh:
                break
        if not fresh and any(self.left.count(id(need.kind)) for need in level):
            # classes of the room left now: their bounds rule out most kinds at once in the spill
            nc = node_classes(t, *self.free.arrays(), by_reliability=self.by_reliability)
        self._spill_level(level, nc)

    def _usable_gpus(self, need: Need, rows: np.ndarray) -> np.ndarray:
        """GPUs per row the kind may use; shared by kinds that ask for the same models and VRAM when `rows` are
        the static shapes (the same array every time)."""
        k = need.kind
        if not k.gpu_count:
            return np.zeros(len(rows), np.int64)
        if rows is not self.shapes[0]:
            return need.gpu_ok(self.t, rows).sum(axis=1)
        key = (k.gpu_models, k.min_vram_mib)
        got = self._usable_cache.get(key)
        if got is None:
            got = self._usable_cache[key] = need.gpu_ok(self.t, rows).sum(axis=1)
        return got

    def _waits(self, needs: list[Need]) -> None:
        t = self.t
        dec = self.decisions
        rows, _, min_pg, min_pc = self.shapes
        # kinds that ask the same of the nodes (they differ in priority, speed or horizon) share their reasons
        by_ask: dict[tuple, tuple[dict[tuple[int, int], float], dict[tuple, str]]] = {}
        for need in needs:
            if not self.left.count(id(need.kind)):
                continue
            left = self.left[id(need.kind)]
            k = need.kind
            ask = (k.gang_size, *k.node_ask)
            shared = by_ask.get(ask)
            if shared is None:
                shared = by_ask[ask] = ({}, {})
            cheapest, reasons = shared
            static: np.ndarray | None = None
            for j in left:
                d = j.demand
                rkey = (d.cpu_milli, d.memory_mib, d.disk_mib, j.bid_per_hour)
                why = reasons.get(rkey)
                if why is not None:
                    dec.waiting.append(Wait(j.id, why))
                    continue
                if static is None:
                    if need.node_rows is not None:
                        r = need.node_rows
                        pg, pc = t.price_gpu[r], t.price_cpu[r]
                    else:
                        r, pg, pc = rows, min_pg, min_pc
                    static = need.place_ok(t, r) & t.schedulable[r]
                    if k.gpu_count:
                        static &= self._usable_gpus(need, r) >= (1 if k.gpu_share_milli else k.gpu_count)
                if not static.any():
                    why = "only nodes that take no new work (draining or lost) could hold it"
                elif j.bid_per_hour is not None:
                    key = (d.gpu_count, d.cpu_milli)
                    if key not in cheapest:
                        price = (d.gpu_count * pg + d.cpu_milli / 1000.0 * pc) * k.gang_size
                        cheapest[key] = float(price[static].min())
                    if cheapest[key] > j.bid_per_hour + 1e-9:
                        why = (
                            f"bid ${j.bid_per_hour:.2f}/h is below the ask of every node that could hold it "
                            f"(cheapest ${cheapest[key]:.2f}/h)"
                        )
                    else:
                        why = (
                            "waiting for free capacity: no eligible node within the bid has room for "
                            f"{_shape(d, k.gang_size)} now"
                        )
                else:
                    why = f"waiting for free capacity: no eligible node has room for {_shape(d, k.gang_size)} now"
                reasons[rkey] = why
                dec.waiting.append(Wait(j.id, why))


class _DeferredStarts:
    """Starts still to be written, in the order they were made: compiled code's placements become `Start`s
    later (`_Round._started`), and a start made in Python (pre-emption's) joins the queue behind them. An object
    of its own, not the round's methods, so that the pre-emptor, which adds starts, does not hold the round: the
    round is then freed by reference counting as it returns, and the cyclic collector resumed after it does not
    have to walk it all first to find it unreachable."""

    __slots__ = ("starts", "writes")

    def __init__(self, starts: list[Start]) -> None:
        self.starts = starts
        self.writes: list[Callable[[], None]] = []

    def add(self, start: Start) -> None:
        """Append one start made in Python, after those still to be written."""
        if self.writes:
            self.writes.append(partial(self.starts.append, start))
        else:
            self.starts.append(start)

    def flush(self) -> None:
        while self.writes:
            writes, self.writes = self.writes, []
            for write in writes:
                write()


class _JobsLeft:
    """id(kind) -> the kind's jobs not placed yet, in queue order, kept as their positions in the queue where
    they are known (compiled code reads those) and as a list made when Python code first reads it."""

    def __init__(self, pending: Sequence[Job]) -> None:
        self.pending = pending
        self._lists: dict[int, list[Job]] = {}
        self._at: dict[int, np.ndarray] = {}

    def __getitem__(self, key: int) -> list[Job]:
        got = self._lists.get(key)
        if got is None:
            got = self._lists[key] = list(map(self.pending.__getitem__, self._at[key].tolist()))
        return got

    def __setitem__(self, key: int, jobs: list[Job] | np.ndarray) -> None:
        """The jobs left as positions in the queue, or as a list (whose positions are then unknown)."""
        if isinstance(jobs, np.ndarray):
            self._at[key] = jobs
            self._lists.pop(key, None)
        else:
            self._lists[key] = jobs
            self._at.pop(key, None)

    def know_positions(self, key: int, at: np.ndarray) -> None:
        """The positions of the list set for `key`, found by the caller."""
        self._at[key] = at

    def drop_first(self, key: int, n: int) -> None:
        """The first `n` jobs started."""
        if key in self._lists:
            self._lists[key] = self._lists[key][n:]
        if key in self._at:
            self._at[key] = self._at[key][n:]

    def count(self, key: int) -> int:
        """How many jobs the kind has left, without making the list."""
        got = self._at.get(key)
        return len(got) if got is not None else len(self._lists[key])

    def positions(self, key: int) -> np.ndarray | None:
        """The positions in the queue of the kind's jobs left, where known."""
        return self._at.get(key)


@dataclass(slots=True)
class _JobColumns:
    """Kinds' jobs as columns for compiled code: each job's position in `pending`, each kind's first index (and
    the end), CPU, memory, disk, and bid (inf: none)."""

    pending: Sequence[Job]
    at: np.ndarray
    k_jobs: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    disk: np.ndarray
    bid: np.ndarray

    def columns(self) -> kernels.Jobs:
        """The columns as the compiled loops read them."""
        return kernels.Jobs(self.cpu, self.mem, self.disk, self.bid)

    def jobs_at(self, i: np.ndarray) -> list[Job]:
        """The jobs at indices `i` of the columns."""
        return list(map(self.pending.__getitem__, self.at[i].tolist()))

    def subset(self, which: list[int]) -> _JobColumns:
        """The columns of the kinds at positions `which` (ascending)."""
        if len(which) == len(self.k_jobs) - 1:
            return self
        lo, n = self.k_jobs[which], np.diff(self.k_jobs)[which]
        k_jobs = np.zeros(len(which) + 1, np.int64)
        k_jobs[1:] = np.cumsum(n)
        at = np.repeat(lo - k_jobs[:-1], n) + np.arange(int(k_jobs[-1]))
        return _JobColumns(
            self.pending, self.at[at], k_jobs, self.cpu[at], self.mem[at], self.disk[at], self.bid[at]
        )


def _kind_columns(needs: list[Need], k_jobs: np.ndarray) -> kernels.Kinds:
    """The kinds as the compiled loops read them: their jobs' range in the job columns (`k_jobs`), gang size,
    and what they ask of the GPUs: count, share, whether constrained to models or VRAM, the VRAM (0 unless
    constrained), and per kind the models it may use (a row per kind)."""
    kinds = [need.kind for need in needs]
    constrained = np.array([need.constrained_gpus for need in needs], np.bool_)
    return kernels.Kinds(
        k_jobs,
        np.array([k.gang_size for k in kinds], np.int64),
        np.array([k.gpu_count for k in kinds], np.int64),
        np.array([k.gpu_share_milli for k in kinds], np.int64),
        constrained,
        np.array([k.min_vram_mib for k in kinds], np.int64) * constrained,
        np.stack([need.model_ok for need in needs]),
    )


def _gpu_ask(need: Need) -> kernels.GpuAsk:
    """What one kind asks of the GPUs, for compiled code that places that kind alone."""
    k = need.kind
    masked = need.constrained_gpus
    return kernels.GpuAsk(
        need.model_ok.reshape(1, -1),
        0,
        masked,
        k.min_vram_mib if masked else 0,
        k.gpu_count,
        k.gpu_share_milli,
    )


def _distinct(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of one length that kinds share (the same objects, from caches), one row each, and each kind's
    row."""
    rows: dict[int, int] = {}
    uniq: list[np.ndarray] = []
    index = np.empty(len(arrays), np.int64)
    for i, a in enumerate(arrays):
        r = rows.get(id(a))
        if r is None:
            r = rows[id(a)] = len(uniq)
            uniq.append(a)
        index[i] = r
    return np.stack(uniq), index


def never_fits_reason(nodes: Sequence[Node], d: Demand, gang_size: int = 1) -> str | None:
    """A reason when no node of the network could hold the demand even if it were empty."""
    t = NodeTable(nodes)
    k = JobKind(
        0,
        gang_size,
        d.gpu_count,
        d.gpu_share_milli,
        d.gpu_models,
        d.min_vram_mib,
        d.regions,
        d.node_ids,
        d.features,
        (),
    )
    need = Need(t, k)
    rows, weight, _, _ = t.shape_groups()
    if need.node_rows is not None:
        rows, weight = need.node_rows, np.ones(len(need.node_rows), np.int64)
    return static_misfit(t, d, gang_size, need, rows, weight)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A round makes a few hundred thousand short-lived objects, which reference counting frees; left on, the
    cyclic collector would also walk the snapshot's million objects several times a round (a fifth of a 100k
    x 100k round). It resumes after the round if it was on before."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def schedule(snapshot: Snapshot, placement: str = "flow") -> Decisions:
    """Place pending jobs: priority levels in descending order, min-cost flow between classes within a level,
    best-fit packing on nodes, gangs all-or-nothing, pre-emption where it pays.

    `placement` other than "flow" names a placement policy (`fabric.placement`, e.g. "fabric") that picks
    each task's node where the round is small enough to score every node for every task (`per_task`); larger
    rounds, and "flow", use the class flow's packing."""
    with _cyclic_gc_paused():
        return _Round(snapshot, placement).run()
