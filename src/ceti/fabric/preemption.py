"""Pre-emption only where it pays.

A pending job that found no free room may displace running work only when every victim is `interruptible`
and of strictly lower priority. Among the ways to make room, the round picks the one that throws away the
least work: a victim's cost is `lost_work_hours x value_per_hour` (work since its last checkpoint), and the
victims of one task all come from one node (the cheapest set found there, by greedy add-then-prune and the
best single victim). When the job has a bid, pre-emption must also pay: the job's value over
`PAYBACK_HOURS` must cover the lost work. A job without a bid relies on its priority alone.

Gangs are all-or-nothing here too: if one task finds no room the whole attempt is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import numpy as np

from ceti.fabric.classes import Need, NodeTable
from ceti.fabric.decisions import Decisions, Preempt, Start
from ceti.fabric.model import Allocation, Job
from ceti.fabric.packing import Free, choose_gpus

PAYBACK_HOURS = 1.0
# Bounds on churn and on work per round; what they leave out waits for the next round.
MAX_PREEMPTED_PER_ROUND = 2000
MAX_KINDS_PER_ROUND = 64  # job kinds (in queue order) that may look for victims
MAX_NODES_PER_TASK = 32  # candidate nodes (cheapest first) examined exactly for one task
MAX_VICTIMS_PER_NODE = 32
# nodes with victims a kind filters first; four times as many more while it lacks some
VICTIM_SCAN_ROWS = 1024


def lost_cost(a: Allocation) -> float:
    return max(a.lost_work_hours, 0.0) * max(a.value_per_hour, 0.0)


@dataclass(slots=True)
class _Option:
    cost: float
    row: int
    victims: list[Allocation]


_victim_cols = attrgetter("priority", "lost_work_hours", "value_per_hour")


class Preemptor:
    def __init__(
        self,
        t: NodeTable,
        free: Free,
        running: Sequence[Allocation],
        decisions: Decisions,
        add_start: Callable[[Start], None] | None = None,
    ) -> None:
        self.t = t
        self.free = free
        self.decisions = decisions
        # the round may write its starts later, in order
        self._add_start = add_start or decisions.starts.append
        m = len(running)
        if free.running_cols is not None:  # what the residual read of the same allocations
            node, alloc_cols, lens = free.running_cols
            assert len(node) == m, "the residual was built from other allocations"
        else:
            node, alloc_cols, lens = np.zeros(0, np.int64), np.zeros((0, 5), np.int64), np.zeros(0, np.int64)
        which = np.flatnonzero((alloc_cols[:, 4] != 0) & (node >= 0))
        vs = list(map(running.__getitem__, which.tolist()))
        m = len(vs)
        self._victims = vs
        self._v_row = node[which]
        # one pass over the victims for the numbers the residual did not read
        cols = np.fromiter(chain.from_iterable(map(_victim_cols, vs)), np.float64, 3 * m).reshape(m, 3)
        self._v_prio = cols[:, 0].astype(np.int64)
        self._v_cost = np.maximum(cols[:, 1], 0.0) * np.maximum(cols[:, 2], 0.0)
        self._v_cpu = alloc_cols[which, 0]
        self._v_mem = alloc_cols[which, 1]
        share = alloc_cols[which, 3]
        self._v_gpu = np.where(share > 0, share, 1000) * lens[which]
        # victims grouped by node (CSR); a node's list is sorted (cheapest first, then priority, id) only when
        # a task looks at it: most rounds look at a few hundred of the nodes
        self._by_row = np.argsort(self._v_row, kind="stable")
        self._row_bounds = np.searchsorted(self._v_row[self._by_row], np.arange(t.n + 1))
        self.by_node: dict[int, list[Allocation]] = {}
        self.min_priority = int(self._v_prio.min()) if m else None
        self.gone: set[str] = set()
        self.budget = MAX_PREEMPTED_PER_ROUND
        self.kinds_left = MAX_KINDS_PER_ROUND
        self._level: tuple[int, tuple[np.ndarray, ...]] | None = None
        self._gsum_cache: tuple[np.ndarray, np.ndarray, np.ndarray, list[int]] | None = None

    def _level_bounds(self, priority: int) -> tuple[np.ndarray, ...]:
        """Per node with victims below `priority`: cheapest victim, and room all its victims would free."""
        if self._level is not None and self._level[0] == priority:
            return self._level[1]
        e = self._v_prio < priority
        rows = self._v_row[e]
        n = self.t.n
        lb = np.full(n, np.inf)
        np.minimum.at(lb, rows, self._v_cost[e])
        cpu = np.bincount(rows, self._v_cpu[e], n)
        mem = np.bincount(rows, self._v_mem[e], n)
        gpu = np.bincount(rows, self._v_gpu[e], n)
        has = np.flatnonzero(np.isfinite(lb))
        has = has[np.argsort(lb[has], kind="stable")]
        out = (has, lb[has], cpu[has], mem[has], gpu[has])
        self._level = (priority, out)
        return out

    def _on_node(self, row: int) -> list[Allocation]:
        got = self.by_node.get(row)
        if got is None:
            b = self._row_bounds
            vs = [self._victims[i] for i in self._by_row[b[row] : b[row + 1]].tolist()]
            got = self.by_node[row] = sorted(vs, key=lambda a: (lost_cost(a), a.priority, a.id))
        return got

    def _eligible(self, row: int, priority: int) -> list[Allocation]:
        return [a for a in self._on_node(row) if a.priority < priority and a.id not in self.gone][
            :MAX_VICTIMS_PER_NODE
        ]

    def _fits(self, row: int, job: Job, need: Need, freed: list[Allocation]) -> bool:
        t = self.t
        f = self.free
        d = job.demand
        cpu = f.cpu[row] + sum(a.cpu_milli for a in freed)
        mem = f.mem[row] + sum(a.memory_mib for a in freed)
        disk = f.disk[row] + sum(a.disk_mib for a in freed)
        if cpu < d.cpu_milli or mem < d.memory_mib or (d.disk_mib and disk < d.disk_mib):
            return False
        if not d.gpu_count:
            return True
        free = list(f.gpu[row])
        for a in freed:
            for g in a.gpu_indices:
                p = t.position(row, g)
                if p is not None:
                    free[p] += a.gpu_milli_per_gpu
        return choose_gpus(free, need.gpu_ok_list(t, row), d.gpu_count, d.gpu_share_milli) is not None

    def _cheapest_on(self, row: int, job: Job, need: Need, victims: list[Allocation]) -> _Option | None:
        best: _Option | None = None
        for a in victims:  # the cheapest single victim that is enough on its own
            if self._fits(row, job, need, [a]):
                best = _Option(lost_cost(a), row, [a])
                break
        chosen: list[Allocation] = []
        for a in victims:  # greedy: cheapest first until the task fits, then drop what is not needed
            chosen.append(a)
            if self._fits(row, job, need, chosen):
                break
        else:
            return best
        for a in sorted(chosen, key=lost_cost, reverse=True):
            rest = [b for b in chosen if b is not a]
            if rest and self._fits(row, job, need, rest):
                chosen = rest
        cost = sum(lost_cost(a) for a in chosen)
        if best is None or cost < best.cost:
            best = _Option(cost, row, chosen)
        return best

    def _gsum(self, rows: np.ndarray, gpu: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Free GPU milli of the candidate nodes `rows[lo:hi]`, as it was when the level first asked (it only
        shrinks, so it stays an upper bound): the GPUs are kept as they were then, and summed as far as the
        level's kinds have read."""
        if self._gsum_cache is None or self._gsum_cache[0] is not rows:
            self._gsum_cache = (rows, gpu.copy(), np.empty(len(rows), np.int64), [0])
        _, frozen, sums, upto = self._gsum_cache
        if hi > upto[0]:
            sums[upto[0] : hi] = np.maximum(frozen[rows[upto[0] : hi]], 0).sum(axis=1)
            upto[0] = hi
        return sums[lo:hi]

    def may_open(self, priority: int) -> bool:
        """Whether `open_kind` would say yes now (without counting it)."""
        return not (
            self.min_priority is None
            or priority <= self.min_priority
            or self.budget <= 0
            or self.kinds_left <= 0
        )

    def open_kind(self, priority: int) -> bool:
        """Whether a kind at `priority` may look for victims now; a yes counts against MAX_KINDS_PER_ROUND."""
        if not self.may_open(priority):
            return False
        self.kinds_left -= 1
        return True

    def victim_rows(self, priority: int) -> tuple[np.ndarray, ...]:
        """Nodes with victims below `priority`, cheapest victim first: (rows, that victim's cost, and the CPU,
        memory and GPU milli all their victims would free)."""
        return self._level_bounds(priority)

    def cheapest_room(self, row: int, job: Job, need: Need) -> tuple[float, list[Allocation]] | None:
        """The cheapest victims on one node that make room there for one task of `job`, and their cost; for
        callers that choose the nodes themselves (multi-node gangs, one task per node)."""
        v = self._eligible(row, job.priority)
        if not v:
            return None
        opt = self._cheapest_on(row, job, need, v)
        return None if opt is None else (opt.cost, opt.victims)

    def record(self, job: Job, priority: int, victims: list[Allocation]) -> None:
        """Pre-empt `victims` (their room already released) for `job`."""
        for a in victims:
            self.gone.add(a.id)
            self.decisions.preemptions.append(
                Preempt(
                    a.id,
                    a.job_id,
                    f"pre-empted for job {job.id} (priority {priority} > {a.priority}); "
                    f"lost work {a.lost_work_hours:g} h worth {lost_cost(a):.2f}",
                )
            )
        self.budget -= len(victims)

    def place(
        self,
        need: Need,
        jobs: list[Job],
        price_ok: Callable[[Job, int], bool],
        least: Callable[[], tuple[int, int]] | None = None,
    ) -> int:
        """Start a prefix of `jobs` on room freed from lower-priority work; returns how many started. `least`
        gives the jobs' smallest CPU and memory where the caller has them at hand."""
        k = need.kind
        if not self.open_kind(k.priority):
            return 0
        t = self.t
        rows, lb, cpu_rel, mem_rel, gpu_rel = self._level_bounds(k.priority)
        if len(rows) == 0:
            return 0
        cpu, mem, _, gpu = self.free.arrays()
        least_cpu, least_mem = (
            least()
            if least is not None
            else (min(j.demand.cpu_milli for j in jobs), min(j.demand.memory_mib for j in jobs))
        )
        # the first nodes (cheapest victims first) that could take a task once their victims go, read in
        # growing slices: a kind looks at a few dozen of them, not at every node with victims
        limit = MAX_NODES_PER_TASK * 8
        picked: list[np.ndarray] = []
        found = 0
        lo, step = 0, VICTIM_SCAN_ROWS
        while lo < len(rows) and found < limit:
            hi = min(lo + step, len(rows))
            r = rows[lo:hi]
            ok = t.schedulable[r] & need.place_ok(t, r)
            ok &= cpu[r] + cpu_rel[lo:hi] >= least_cpu
            ok &= mem[r] + mem_rel[lo:hi] >= least_mem
            if k.gpu_count:
                if need.constrained_gpus:
                    ok &= need.type_ok(t)[t.gpu_type[r]]
                ok &= t.gpu_count[r] >= k.gpu_count
                per = k.gpu_share_milli or 1000
                ok &= self._gsum(rows, gpu, lo, hi) + gpu_rel[lo:hi] >= per * k.gpu_count
            got = lo + np.flatnonzero(ok)
            picked.append(got)
            found += len(got)
            lo, step = hi, step * 4
        sel = np.concatenate(picked)[:limit] if picked else np.zeros(0, np.int64)
        bound = list(zip(lb[sel].tolist(), rows[sel].tolist(), strict=True))
        if not bound:
            return 0
        placed = 0
        for job in jobs:
            if self.budget <= 0 or not self._place_job(need, job, bound, price_ok):
                break
            placed += 1
        return placed  # the level's bounds stay valid: removing victims only raises lower bounds

    def _place_job(
        self, need: Need, job: Job, bound: list[tuple[float, int]], price_ok: Callable[[Job, int], bool]
    ) -> bool:
        t = self.t
        f = self.free
        k = need.kind
        d = job.demand
        taken: list[tuple[int, list[int]]] = []
        victims_all: list[Allocation] = []
        total = 0.0
        for _ in range(k.gang_size):
            best: _Option | None = None
            tried = 0
            for lb, r in bound:
                if (best is not None and lb >= best.cost) or tried >= MAX_NODES_PER_TASK:
                    break
                if not price_ok(job, r):
                    continue
                tried += 1
                v = self._eligible(r, k.priority)
                if not v:
                    continue
                opt = self._cheapest_on(r, job, need, v)
                if opt is not None and (best is None or (opt.cost, opt.row) < (best.cost, best.row)):
                    best = opt
            if best is None or len(victims_all) + len(best.victims) > self.budget:
                self._rollback(job, taken, victims_all)
                return False
            r = best.row
            for a in best.victims:
                f.release(a)
                self.gone.add(a.id)
            victims_all.extend(best.victims)
            total += best.cost
            pos = f.take(r, d, need.gpu_ok_list(t, r))
            if pos is None:  # cannot happen: _fits said it would
                self._rollback(job, taken, victims_all)
                return False
            taken.append((r, pos))
        if job.bid_per_hour is not None and job.bid_per_hour * PAYBACK_HOURS < total:
            self._rollback(job, taken, victims_all)
            return False
        self.record(job, k.priority, victims_all)
        for task, (r, pos) in enumerate(taken):
            self._add_start(Start(job.id, t.ids[r], t.gpu_indices(r, pos), d.gpu_share_milli, task))
        return True

    def _rollback(self, job: Job, taken: list[tuple[int, list[int]]], victims: list[Allocation]) -> None:
        for r, pos in taken:
            self.free.give(r, job.demand, pos)
        for a in victims:
            self.free.hold(a)
            self.gone.discard(a.id)
