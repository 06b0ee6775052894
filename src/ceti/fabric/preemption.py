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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ceti.fabric.classes import Need, NodeTable
from ceti.fabric.decisions import Decisions, Preempt, Start
from ceti.fabric.model import Allocation, Job
from ceti.fabric.packing import choose_gpus, take_tasks

PAYBACK_HOURS = 1.0
MAX_PREEMPTED_PER_ROUND = 2000  # bounds churn (and work) in one round; the rest waits for the next
MAX_VICTIMS_PER_NODE = 32


def lost_cost(a: Allocation) -> float:
    return max(a.lost_work_hours, 0.0) * max(a.value_per_hour, 0.0)


@dataclass(slots=True)
class _Option:
    cost: float
    row: int
    victims: list[Allocation]


class Preemptor:
    def __init__(self, t: NodeTable, running: Sequence[Allocation], decisions: Decisions) -> None:
        self.t = t
        self.decisions = decisions
        self.by_node: dict[int, list[Allocation]] = {}
        for a in running:
            if not a.interruptible:
                continue
            i = t.index.get(a.node_id)
            if i is not None:
                self.by_node.setdefault(i, []).append(a)
        for lst in self.by_node.values():
            lst.sort(key=lambda a: (lost_cost(a), a.priority, a.id))
        self.min_priority = min((a.priority for v in self.by_node.values() for a in v), default=None)
        self.gone: set[str] = set()
        self.budget = MAX_PREEMPTED_PER_ROUND

    def _eligible(self, row: int, priority: int) -> list[Allocation]:
        return [a for a in self.by_node.get(row, ()) if a.priority < priority and a.id not in self.gone][
            :MAX_VICTIMS_PER_NODE
        ]

    def _fits(self, row: int, need: Need, freed: list[Allocation]) -> bool:
        t = self.t
        d = need.demand
        cpu = int(t.cpu_free[row]) + sum(a.cpu_milli for a in freed)
        mem = int(t.mem_free[row]) + sum(a.memory_mib for a in freed)
        disk = int(t.disk_free[row]) + sum(a.disk_mib for a in freed)
        if cpu < d.cpu_milli or mem < d.memory_mib or (d.disk_mib and disk < d.disk_mib):
            return False
        if not d.gpu_count:
            return True
        free = t.gpu_free[row].tolist()
        for a in freed:
            for g in a.gpu_indices:
                p = t.position(row, g)
                if p is not None:
                    free[p] += a.gpu_milli_per_gpu
        ok = need.gpu_ok(t, row).tolist()
        return choose_gpus(free, ok, d) is not None

    def _cheapest_on(self, row: int, need: Need, victims: list[Allocation]) -> _Option | None:
        best: _Option | None = None
        for a in victims:  # the cheapest single victim that is enough on its own
            if self._fits(row, need, [a]):
                best = _Option(lost_cost(a), row, [a])
                break
        chosen: list[Allocation] = []
        for a in victims:  # greedy: cheapest first until the task fits, then drop what is not needed
            chosen.append(a)
            if self._fits(row, need, chosen):
                break
        else:
            return best
        for a in sorted(chosen, key=lost_cost, reverse=True):
            rest = [b for b in chosen if b is not a]
            if rest and self._fits(row, need, rest):
                chosen = rest
        cost = sum(lost_cost(a) for a in chosen)
        if best is None or cost < best.cost:
            best = _Option(cost, row, chosen)
        return best

    def place(self, need: Need, jobs: list[Job]) -> int:
        """Start a prefix of `jobs` on room freed from lower-priority work; returns how many started."""
        c = need.cls
        if self.min_priority is None or c.priority <= self.min_priority or self.budget <= 0:
            return 0
        t = self.t
        rows = np.fromiter(self.by_node.keys(), np.int64, len(self.by_node))
        rows = rows[t.schedulable[rows] & need.node_ok(t, rows)]
        if need.demand.gpu_count:
            usable = need.gpu_ok(t, rows).sum(axis=1)
            rows = rows[usable >= need.demand.gpu_count]
        if len(rows) == 0:
            return 0
        # lower bound of the cost on each node: its cheapest eligible victim; visit nodes in that order
        bound: list[tuple[float, int]] = []
        for r in rows.tolist():
            v = self._eligible(r, c.priority)
            if v:
                bound.append((lost_cost(v[0]), r))
        bound.sort()
        placed = 0
        for job in jobs:
            if self.budget <= 0 or not self._place_job(need, job, bound):
                break
            placed += 1
        return placed

    def _place_job(self, need: Need, job: Job, bound: list[tuple[float, int]]) -> bool:
        t = self.t
        c = need.cls
        d = c.demand
        saved: dict[int, tuple[int, int, int, list[int]]] = {}
        taken: list[tuple[int, tuple[int, ...]]] = []
        victims_all: list[Allocation] = []
        total = 0.0
        for _ in range(c.gang_size):
            best: _Option | None = None
            for lb, r in bound:
                if best is not None and lb >= best.cost:
                    break
                v = self._eligible(r, c.priority)
                if not v:
                    continue
                opt = self._cheapest_on(r, need, v)
                if opt is not None and (best is None or (opt.cost, opt.row) < (best.cost, best.row)):
                    best = opt
            if best is None or len(victims_all) + len(best.victims) > self.budget:
                self._rollback(saved, victims_all)
                return False
            r = best.row
            if r not in saved:
                saved[r] = (int(t.cpu_free[r]), int(t.mem_free[r]), int(t.disk_free[r]), t.gpu_free[r].tolist())
            for a in best.victims:
                t.hold(a, -1)
                self.gone.add(a.id)
            victims_all.extend(best.victims)
            total += best.cost
            taken.append((r, take_tasks(t, r, d, 1, need)[0]))
        if c.bid_per_hour is not None and c.bid_per_hour * PAYBACK_HOURS < total:
            self._rollback(saved, victims_all)
            return False
        for a in victims_all:
            self.decisions.preemptions.append(
                Preempt(
                    a.id,
                    a.job_id,
                    f"pre-empted for job {job.id} (priority {c.priority} > {a.priority}); "
                    f"lost work {a.lost_work_hours:g} h worth {lost_cost(a):.2f}",
                )
            )
        self.budget -= len(victims_all)
        for task, (r, gpus) in enumerate(taken):
            self.decisions.starts.append(Start(job.id, t.ids[r], gpus, d.gpu_share_milli, task))
        return True

    def _rollback(self, saved: dict[int, tuple[int, int, int, list[int]]], victims: list[Allocation]) -> None:
        t = self.t
        for r, (cpu, mem, disk, gpus) in saved.items():
            t.cpu_free[r] = cpu
            t.mem_free[r] = mem
            t.disk_free[r] = disk
            t.gpu_free[r] = gpus
        for a in victims:
            self.gone.discard(a.id)
