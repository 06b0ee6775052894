"""One scheduling round: snapshot in, decisions out. Pure: no I/O, no clock, no database.

The round, per priority level from the highest down (so a lower priority only ever sees what the higher ones
left):

1. group schedulable nodes with room into node classes (`classes.node_classes`);
2. solve a min-cost flow from the level's job classes to node classes (`flow.solve`);
3. pack each job class onto concrete nodes of the classes the flow chose, in queue order (`packing`);
4. spill what the flow's class-level estimate could not place onto any node that fits, cheapest first;
5. pre-empt strictly lower-priority interruptible work where that pays (`preemption`).

Jobs no node could hold even empty are `Unschedulable`; the rest that did not start `Wait`, with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ceti.fabric import flow
from ceti.fabric.classes import (
    JobClass,
    Need,
    NodeClasses,
    NodeTable,
    fit_counts,
    job_classes,
    node_classes,
    static_class_ids,
)
from ceti.fabric.decisions import Decisions, Unschedulable, Wait
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job, Node, Snapshot
from ceti.fabric.packing import pack_jobs
from ceti.fabric.preemption import Preemptor

ARCS_PER_CLASS = 48  # the flow sees a job class's cheapest node classes; the spill step sees all nodes
_COST_SCALE = 50_000.0


def queue_order(job: Job) -> tuple[int, int]:
    """Higher priority first; within a priority, earlier submission first."""
    return (-job.priority, job.order)


def arc_cost(
    need: Need,
    price: np.ndarray,
    price_norm: float,
    speed: np.ndarray,
    reliability: np.ndarray,
    whole: np.ndarray,
    partial: np.ndarray,
) -> np.ndarray:
    """Cost of one task of the class on a node (or node class): the price of useful work, then fit.

    Useful work per hour is speed x reliability; the cost is (1 + price / the class's dearest price) divided
    by it, so a faster model, a more reliable node and a cheaper ask each lower the cost, and a cheaper ask
    never outweighs a much faster GPU. A small fragmentation term prefers tight fits.
    """
    d = need.demand
    eff = np.maximum(speed * np.clip(reliability, 0.05, 1.0), 0.1)
    rel_price = price / price_norm if price_norm > 0 else np.zeros_like(price)
    cost = _COST_SCALE * (1.0 + rel_price) / eff
    if d.gpu_count and d.gpu_share_milli:
        frag = np.where(partial >= d.gpu_share_milli, 0.0, 400.0) + 20.0 * whole
    elif d.gpu_count:
        frag = 40.0 * np.maximum(whole - d.gpu_count, 0)
    else:
        frag = 400.0 * whole  # CPU-only work keeps off nodes whose GPUs are free
    return np.minimum(cost + frag, flow.MAX_ARC_COST).astype(np.int64)


def _static_misfit_reason(t: NodeTable, c: JobClass, need: Need) -> str | None:
    """A human reason when no node could hold one task (or the whole gang) even if it were empty."""
    d = c.demand
    if t.n == 0:
        return "no nodes are registered"
    rows = np.arange(t.n)
    ok = np.ones(t.n, np.bool_)
    if d.regions:
        ok &= need.region_ok[t.region]
        if not ok.any():
            return f"no node in region {_names(d.regions)}"
    if d.node_ids:
        m = np.zeros(t.n, np.bool_)
        if need.node_rows is not None:
            m[need.node_rows] = True
        ok &= m
        if not ok.any():
            return f"none of the requested nodes ({_names(d.node_ids)}) is registered" + (
                " in the requested regions" if d.regions else ""
            )
    what = _gpu_words(d)
    if d.gpu_count:
        gpu_ok = need.gpu_ok(t, rows)
        usable = gpu_ok.sum(axis=1)
        if d.gpu_share_milli and d.gpu_count == 1:
            enough = usable >= 1
        else:
            enough = usable >= d.gpu_count
        if not (ok & (usable > 0)).any():
            return f"needs {what}; no node has such a GPU"
        if not (ok & enough).any():
            most = int(usable[ok].max())
            return f"needs {what}; the largest such node has {most}"
        ok &= enough
    for name, need_v, have, unit in (
        ("CPUs", d.cpu_milli, t.cpu_total, 1000),
        ("memory", d.memory_mib, t.mem_total, 1024),
        ("disk", d.disk_mib, t.disk_total, 1024),
    ):
        if need_v > 0 and not (ok & (have >= need_v)).any():
            most = int(have[ok].max()) if ok.any() else 0
            u = "" if name == "CPUs" else " GiB"
            return (
                f"needs {_num(need_v / unit)}{u} {name}" + (f" with {what}" if d.gpu_count else "")
                + f"; the largest eligible node has {_num(most / unit)}{u}"
            )
        if need_v > 0:
            ok &= have >= need_v
    if c.gang_size > 1:
        # a gang needs all its tasks at once: count tasks the network could hold if it were empty
        per = _empty_fit(t, np.flatnonzero(ok), d, need)
        total = int(per.sum())
        if total < c.gang_size:
            return f"a gang of {c.gang_size} tasks needs room for all at once; an empty network holds {total}"
    return None


def _empty_fit(t: NodeTable, rows: np.ndarray, d: Demand, need: Need) -> np.ndarray:
    cap = np.full(len(rows), 1 << 20, np.int64)
    for v, have in ((d.cpu_milli, t.cpu_total), (d.memory_mib, t.mem_total), (d.disk_mib, t.disk_total)):
        if v > 0:
            cap = np.minimum(cap, have[rows] // v)
    if d.gpu_count:
        usable = need.gpu_ok(t, rows).sum(axis=1)
        if d.gpu_share_milli and d.gpu_count == 1:
            cap = np.minimum(cap, usable * (WHOLE_GPU_MILLI // d.gpu_share_milli))
        else:
            cap = np.minimum(cap, usable // d.gpu_count)
    return cap


def _names(xs: frozenset[str]) -> str:
    items = sorted(xs)
    return "|".join(items[:5]) + ("|..." if len(items) > 5 else "")


def _num(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def _gpu_words(d: Demand) -> str:
    model = f" of {_names(d.gpu_models)}" if d.gpu_models else ""
    vram = f" with >= {d.min_vram_mib // 1024} GiB VRAM" if d.min_vram_mib else ""
    if d.gpu_share_milli:
        return f"{d.gpu_share_milli / 10:g}% of {d.gpu_count} GPU{'s' if d.gpu_count > 1 else ''}{model}{vram}"
    return f"{d.gpu_count} GPU{'s' if d.gpu_count > 1 else ''}{model}{vram}"


class _Round:
    def __init__(self, snapshot: Snapshot) -> None:
        self.t = NodeTable(snapshot.nodes)
        self.t.hold_all(snapshot.running)
        self.static_id = static_class_ids(self.t)
        self.decisions = Decisions()
        self.preemptor = Preemptor(self.t, snapshot.running, self.decisions)
        self.cursor: dict[int, int] = {}  # id(class) -> jobs placed so far
        self.price_norm: dict[int, float] = {}

    # ---- per class helpers ----
    def _norm(self, need: Need) -> float:
        key = id(need.cls)
        v = self.price_norm.get(key)
        if v is None:
            d = need.demand
            t = self.t
            v = float((d.gpu_count * t.price_gpu + (d.cpu_milli / 1000.0) * t.price_cpu).max(initial=0.0))
            self.price_norm[key] = v
        return v

    def _left(self, c: JobClass) -> list[Job]:
        return c.jobs[self.cursor.get(id(c), 0) :]

    def _pack(self, need: Need, rows: np.ndarray, max_tasks: int | None = None) -> int:
        c = need.cls
        jobs = self._left(c)
        if not jobs or len(rows) == 0:
            return 0
        t = self.t
        d = c.demand
        ok = need.node_ok(t, rows)
        rows = rows[ok]
        gpu_ok = need.gpu_ok(t, rows) if (d.gpu_count and need.constrained_gpus) else None
        caps = fit_counts(t, rows, d, gpu_ok)
        placed = pack_jobs(
            t, jobs, c.gang_size, d, rows, caps, need if need.constrained_gpus else None,
            self.decisions.starts, max_tasks,
        )
        if placed:
            self.cursor[id(c)] = self.cursor.get(id(c), 0) + placed
        return placed

    # ---- the flow between classes ----
    def _plan(self, level: list[Need], nc: NodeClasses) -> list[list[tuple[int, int, int]]]:
        """Per job class: (cost, node class, tasks) chosen by the min-cost flow."""
        t = self.t
        C = nc.size
        arcs_j: list[np.ndarray] = []
        arcs_c: list[np.ndarray] = []
        arcs_cap: list[np.ndarray] = []
        arcs_cost: list[np.ndarray] = []
        slots = np.zeros(C, np.int64)
        supply = np.zeros(len(level), np.int64)
        if C == 0:
            return [[] for _ in level]
        n_types_homog = int(t.gpu_type[t.homogeneous].max(initial=-1)) + 1
        mixed_cls = np.flatnonzero(nc.gpu_type >= n_types_homog) if t.n else np.zeros(0, np.int64)
        label_of_row: np.ndarray | None = None
        for j, need in enumerate(level):
            c = need.cls
            d = c.demand
            supply[j] = len(self._left(c)) * c.gang_size
            if supply[j] == 0:
                continue
            per = np.full(C, 1 << 20, np.int64)
            if d.cpu_milli > 0:
                per = np.minimum(per, nc.cpu // d.cpu_milli)
            if d.memory_mib > 0:
                per = np.minimum(per, nc.mem // d.memory_mib)
            if d.disk_mib > 0:
                per = np.minimum(per, nc.disk // d.disk_mib)
            sample = nc.sample
            if d.gpu_count:
                type_ok = need.gpu_ok(t, sample)[:, 0] if need.constrained_gpus else np.ones(C, np.bool_)
                if d.gpu_share_milli and d.gpu_count == 1:
                    s = d.gpu_share_milli
                    g = nc.whole * (WHOLE_GPU_MILLI // s) + nc.partial // s
                elif d.gpu_share_milli:
                    g = (nc.whole + (nc.partial >= d.gpu_share_milli)) // d.gpu_count
                else:
                    g = nc.whole // d.gpu_count
                per = np.minimum(per, np.where(type_ok, g, 0))
            ok = need.region_ok[nc.region] if len(need.region_ok) else np.ones(C, np.bool_)
            price = d.gpu_count * nc.price_gpu + (d.cpu_milli / 1000.0) * nc.price_cpu
            ok &= price <= need.price_limit
            per = np.where(ok, np.maximum(per, 0), 0)
            if len(mixed_cls) and d.gpu_count:  # singleton classes of mixed-GPU nodes: exact per node
                rows = nc.sample[mixed_cls]
                per[mixed_cls] = np.where(
                    ok[mixed_cls], fit_counts(t, rows, d, need.gpu_ok(t, rows)), 0
                )
            if need.node_rows is not None:
                if label_of_row is None:
                    label_of_row = np.full(t.n, -1, np.int64)
                    label_of_row[nc.rows] = nc.label
                lab = label_of_row[need.node_rows]
                count = np.bincount(lab[lab >= 0], minlength=C)
            else:
                count = nc.count
            cap = per * count
            cand = np.flatnonzero(cap > 0)
            if len(cand) == 0:
                continue
            speed = need.node_speed(t, sample[cand])
            cost = arc_cost(
                need, price[cand], self._norm(need), speed, nc.reliability[cand], nc.whole[cand],
                nc.partial[cand],
            )
            if len(cand) > ARCS_PER_CLASS:
                keep = np.argpartition(cost, ARCS_PER_CLASS)[:ARCS_PER_CLASS]
                cand, cost = cand[keep], cost[keep]
            arcs_j.append(np.full(len(cand), j, np.int64))
            arcs_c.append(cand)
            arcs_cap.append(np.minimum(cap[cand], supply[j]))
            arcs_cost.append(cost)
            np.maximum.at(slots, cand, per[cand] * count[cand])
        plans: list[list[tuple[int, int, int]]] = [[] for _ in level]
        if not arcs_j:
            return plans
        aj = np.concatenate(arcs_j)
        ac = np.concatenate(arcs_c)
        acap = np.concatenate(arcs_cap)
        acost = np.concatenate(arcs_cost)
        sent = flow.solve(supply, aj, ac, acap, acost, slots)
        for k in np.flatnonzero(sent > 0).tolist():
            plans[int(aj[k])].append((int(acost[k]), int(ac[k]), int(sent[k])))
        for p in plans:
            p.sort()
        return plans

    # ---- the spill: any node that fits, cheapest first ----
    def _spill(self, need: Need, open_rows: np.ndarray) -> int:
        c = need.cls
        if not self._left(c) or len(open_rows) == 0:
            return 0
        t = self.t
        d = c.demand
        rows = open_rows
        if need.node_rows is not None:
            rows = np.intersect1d(rows, need.node_rows)
        rows = rows[need.node_ok(t, rows)]
        gpu_ok = need.gpu_ok(t, rows) if (d.gpu_count and need.constrained_gpus) else None
        caps = fit_counts(t, rows, d, gpu_ok)
        nz = np.flatnonzero(caps > 0)
        if int(caps[nz].sum()) < c.gang_size:
            return 0
        rows, caps = rows[nz], caps[nz]
        price = d.gpu_count * t.price_gpu[rows] + (d.cpu_milli / 1000.0) * t.price_cpu[rows]
        free = t.gpu_free[rows]
        whole = (free >= WHOLE_GPU_MILLI).sum(axis=1)
        partial = np.where((free > 0) & (free < WHOLE_GPU_MILLI), free, 0).max(axis=1, initial=0)
        cost = arc_cost(
            need, price, self._norm(need), need.node_speed(t, rows), t.reliability[rows], whole, partial
        )
        gsum = np.where(free > 0, free, 0).sum(axis=1)
        order = np.lexsort((rows, t.cpu_free[rows], gsum, cost))
        gpu_needed = need if need.constrained_gpus else None
        placed = pack_jobs(
            t, self._left(c), c.gang_size, d, rows[order], caps[order], gpu_needed, self.decisions.starts
        )
        if placed:
            self.cursor[id(c)] = self.cursor.get(id(c), 0) + placed
        return placed

    def run(self, classes: list[JobClass]) -> Decisions:
        t = self.t
        dec = self.decisions
        needs: list[Need] = []
        for c in classes:
            need = Need(t, c)
            why = _static_misfit_reason(t, c, need)
            if why:
                dec.unschedulable.extend(Unschedulable(j.id, why) for j in c.jobs)
                continue
            needs.append(need)
        levels: list[list[Need]] = []
        for need in needs:
            if levels and levels[-1][0].cls.priority == need.cls.priority:
                levels[-1].append(need)
            else:
                levels.append([need])
        for level in levels:
            nc = node_classes(t, self.static_id)
            plans = self._plan(level, nc)
            for need, plan in zip(level, plans, strict=True):
                for _, cls_id, tasks in plan:
                    if not self._left(need.cls):
                        break
                    self._pack(need, nc.members(cls_id), tasks)
            open_rows = np.flatnonzero(t.schedulable & (t.cpu_free >= 0) & (t.mem_free >= 0))
            exhausted: list[Demand] = []
            for need in level:
                if not self._left(need.cls):
                    continue
                d = need.cls.demand
                if any(_dominates(d, e) for e in exhausted):
                    continue
                self._spill(need, open_rows)
                if self._left(need.cls) and need.cls.gang_size == 1 and _plain(need):
                    exhausted.append(d)
            for need in level:
                left = self._left(need.cls)
                if left:
                    n = self.preemptor.place(need, left)
                    if n:
                        self.cursor[id(need.cls)] = self.cursor.get(id(need.cls), 0) + n
        for need in needs:
            left = self._left(need.cls)
            if left:
                why = self._wait_reason(need)
                dec.waiting.extend(Wait(j.id, why) for j in left)
        return dec

    def _wait_reason(self, need: Need) -> str:
        t = self.t
        d = need.demand
        rows = np.arange(t.n)
        static = need.region_ok[t.region] if len(need.region_ok) else np.ones(t.n, np.bool_)
        if need.node_rows is not None:
            m = np.zeros(t.n, np.bool_)
            m[need.node_rows] = True
            static &= m
        if d.gpu_count and need.constrained_gpus:
            static &= need.gpu_ok(t, rows).any(axis=1)
        if need.price_limit != math.inf:
            price = d.gpu_count * t.price_gpu + (d.cpu_milli / 1000.0) * t.price_cpu
            if not (static & (price <= need.price_limit)).any():
                cheapest = float(price[static].min()) if static.any() else 0.0
                return (
                    f"bid ${need.cls.bid_per_hour:.2f}/h is below the ask of every node that could hold it "
                    f"(cheapest ${cheapest * need.cls.gang_size:.2f}/h)"
                )
            static &= price <= need.price_limit
        if not (static & t.schedulable).any():
            return "only nodes that take no new work (draining or lost) could hold it"
        return f"waiting for free capacity: no eligible node has room for {_shape(d, need.cls.gang_size)} now"


def _shape(d: Demand, gang: int) -> str:
    parts = [f"{_num(d.cpu_milli / 1000)} CPUs", f"{_num(d.memory_mib / 1024)} GiB"]
    if d.gpu_count:
        parts.insert(0, _gpu_words(d))
    s = ", ".join(parts)
    return f"{gang} tasks of {s}" if gang > 1 else s


def _plain(need: Need) -> bool:
    d = need.demand
    return not (d.node_ids or need.price_limit != math.inf)


def _dominates(d: Demand, smaller: Demand) -> bool:
    """True if `d` needs at least what `smaller` needs everywhere, under no looser constraints."""
    if d.gpu_count < smaller.gpu_count or d.cpu_milli < smaller.cpu_milli:
        return False
    if d.memory_mib < smaller.memory_mib or d.disk_mib < smaller.disk_mib:
        return False
    if d.gpu_count and smaller.gpu_count:
        if (d.gpu_share_milli or WHOLE_GPU_MILLI) < (smaller.gpu_share_milli or WHOLE_GPU_MILLI):
            return False
        if d.gpu_count != smaller.gpu_count and (d.gpu_share_milli or smaller.gpu_share_milli):
            return False
    elif smaller.gpu_count:
        return False
    if smaller.gpu_models and not (d.gpu_models and d.gpu_models <= smaller.gpu_models):
        return False
    if d.min_vram_mib < smaller.min_vram_mib:
        return False
    if smaller.regions and not (d.regions and d.regions <= smaller.regions):
        return False
    return not (smaller.node_ids and not (d.node_ids and d.node_ids <= smaller.node_ids))


def never_fits_reason(nodes: Sequence[Node], d: Demand) -> str | None:
    """A reason when no node of the network could hold the demand even if it were empty."""
    t = NodeTable(nodes)
    c = JobClass(d, 0, 1, None, ())
    return _static_misfit_reason(t, c, Need(t, c))


def schedule(snapshot: Snapshot) -> Decisions:
    """Place pending jobs: priority levels in descending order, min-cost flow between classes within a level,
    best-fit packing on nodes, gangs all-or-nothing, pre-emption where it pays."""
    return _Round(snapshot).run(job_classes(snapshot.pending))
