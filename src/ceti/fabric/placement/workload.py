"""The target workload FGD measures fragmentation against: the popular task classes of a trace.

A class is (CPU milli, GPU milli per GPU, GPU count, GPU-type constraint as written). Classes are counted
once per pod, sorted by count (ties: the larger class first), and the most common ones covering 95% of the
pods are kept and renormalised, as the FGD paper's simulator does. CPU-only classes are included: FGD
counts every idle GPU as fragmented for them, which rewards using GPUs at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True, slots=True)
class TaskClass:
    cpu_milli: int
    gpu_milli: int  # per GPU; 0 = CPU-only
    gpu_count: int
    gpu_spec: str = ""  # GPU-type constraint as written ("V100M16|V100M32"); "" = any model

    @property
    def gpu_models(self) -> frozenset[str]:
        return frozenset(m for m in self.gpu_spec.split("|") if m)

    def sort_key(self) -> tuple[int, int, int, str]:
        return (self.cpu_milli, self.gpu_milli, self.gpu_count, self.gpu_spec)


@dataclass(frozen=True, slots=True)
class TargetWorkload:
    classes: tuple[TaskClass, ...]
    probability: tuple[float, ...]

    @classmethod
    def from_counts(cls, counts: Counter[TaskClass], coverage: float = 0.95) -> TargetWorkload:
        if not counts:
            return cls((), ())
        total = float(sum(counts.values()))
        ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0].sort_key()), reverse=True)
        kept: list[tuple[TaskClass, int]] = []
        cum = 0.0
        for item in ordered:
            if cum >= coverage * total:
                break
            kept.append(item)
            cum += item[1]
        norm = float(sum(c for _, c in kept))
        return cls(tuple(k for k, _ in kept), tuple(c / norm for _, c in kept))

    @classmethod
    def from_tasks(cls, tasks: Iterable[tuple[int, int, int, str]], coverage: float = 0.95) -> TargetWorkload:
        """`tasks`: (cpu milli, gpu milli per GPU, gpu count, gpu_spec as written) per pod of a trace."""
        counts: Counter[TaskClass] = Counter(
            TaskClass(cpu, milli if count else 0, count, spec if count else "")
            for cpu, milli, count, spec in tasks
        )
        return cls.from_counts(counts, coverage)

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, slots=True)
class WorkloadArrays:
    """A target workload laid out for one cluster's model index."""

    cpu: np.ndarray  # [K] int64
    milli: np.ndarray  # [K] int64, per GPU, 0 for CPU classes
    count: np.ndarray  # [K] int64
    access: np.ndarray  # [K, M] bool: may class k use a node of model m
    prob: np.ndarray  # [K] float64
    is_gpu: np.ndarray  # [K] bool

    @classmethod
    def build(cls, workload: TargetWorkload, models: Sequence[str]) -> WorkloadArrays:
        k = len(workload.classes)
        access = np.zeros((k, len(models)), dtype=bool)
        for i, c in enumerate(workload.classes):
            allowed = c.gpu_models
            for j, m in enumerate(models):
                access[i, j] = bool(m) and (not allowed or m in allowed)
        milli = np.asarray([c.gpu_milli for c in workload.classes], dtype=np.int64)
        return cls(
            cpu=np.asarray([c.cpu_milli for c in workload.classes], dtype=np.int64),
            milli=milli,
            count=np.asarray([c.gpu_count for c in workload.classes], dtype=np.int64),
            access=access,
            prob=np.asarray(workload.probability, dtype=np.float64),
            is_gpu=milli > 0,
        )


WHOLE_GPU = 1000


def share_patterns(sizes: Iterable[int]) -> list[dict[int, int]]:
    """Every non-empty multiset of the share sizes that fits one GPU (sum <= 1000), as {size: count}."""
    ordered = sorted({int(s) for s in sizes if 0 < s < WHOLE_GPU})
    out: list[dict[int, int]] = []

    def rec(start: int, room: int, held: dict[int, int]) -> None:
        for j in range(start, len(ordered)):
            s = ordered[j]
            if s <= room:
                held[s] = held.get(s, 0) + 1
                out.append(dict(held))
                rec(j, room - s, held)
                held[s] -= 1
                if not held[s]:
                    del held[s]

    rec(0, WHOLE_GPU, {})
    return out


@dataclass(frozen=True, slots=True)
class SharePlan:
    """How the target workload's GPU shares would best share GPUs, planned once from the class distribution.

    The plan is the optimum of a packing LP on the expected workload: the target classes in proportion,
    enough of them to fill the GPUs, each GPU either given whole to a whole-GPU task or holding a multiset of
    shares that fits (a pattern); maximise the GPU milli placed. Its patterns with positive weight are the
    pairings worth making, e.g. on the openb traces 650 + 320, 550 + 230 + 220, 590 + 370, 470 + 470, and
    810 alone or with 160. A share "follows the plan" on a GPU when the GPU's used milli plus the share is a
    sub-multiset of a planned pattern that contains the share: `(used, milli)` is in `follows`. Only used milli
    is known of a GPU, so any sub-multiset summing to it counts.
    """

    patterns: tuple[tuple[tuple[int, int], ...], ...]  # ((size, count), ...) per planned pattern
    follows: frozenset[tuple[int, int]]
    # share size -> the least CPU milli a target class of that size asks
    share_cpu: dict[int, int] = field(default_factory=dict, compare=False)
    # used milli of a GPU -> the share size a GPU at that level still waits for (of the sizes that could
    # complete a planned pattern from there, the one whose class asks the least CPU); absent where a planned
    # pattern is complete at that level, or none reaches it
    open_partner: dict[int, int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_workload(cls, workload: TargetWorkload) -> SharePlan:
        from ortools.linear_solver import pywraplp

        shares: dict[int, float] = {}
        whole: dict[int, float] = {}
        for c, p in zip(workload.classes, workload.probability, strict=True):
            if c.gpu_count == 1 and 0 < c.gpu_milli < WHOLE_GPU:
                shares[c.gpu_milli] = shares.get(c.gpu_milli, 0.0) + p
            elif c.gpu_count:
                whole[c.gpu_count] = whole.get(c.gpu_count, 0.0) + p
        gpus_per_task = sum(s * p for s, p in shares.items()) / WHOLE_GPU + sum(
            k * p for k, p in whole.items()
        )
        if not shares or gpus_per_task <= 0:
            return cls((), frozenset())
        gpus = 1000.0  # the LP is scale-free: plan for 1000 GPUs filled by arrivals
        tasks = gpus / gpus_per_task
        solver = pywraplp.Solver.CreateSolver("GLOP")
        if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
            return cls((), frozenset())
        objective = solver.Objective()
        capacity = solver.Constraint(-solver.infinity(), gpus)
        for k, p in sorted(whole.items()):
            v = solver.NumVar(0.0, p * tasks, f"whole{k}")
            capacity.SetCoefficient(v, float(k))
            objective.SetCoefficient(v, float(k * WHOLE_GPU))
        rows = {s: solver.Constraint(0.0, p * tasks) for s, p in sorted(shares.items())}
        pats = share_patterns(shares)
        cols = []
        for pat in pats:
            v = solver.NumVar(0.0, solver.infinity(), "")
            cols.append(v)
            capacity.SetCoefficient(v, 1.0)
            objective.SetCoefficient(v, float(sum(s * n for s, n in pat.items())))
            for s, n in pat.items():
                rows[s].SetCoefficient(v, float(n))
        objective.SetMaximization()
        if solver.Solve() != pywraplp.Solver.OPTIMAL:  # pragma: no cover - bounded and feasible (all zero)
            return cls((), frozenset())
        planned = [pat for pat, v in zip(pats, cols, strict=True) if v.solution_value() > 1e-6]
        share_cpu: dict[int, int] = {}
        for c in workload.classes:
            if c.gpu_count == 1 and 0 < c.gpu_milli < WHOLE_GPU:
                share_cpu[c.gpu_milli] = min(share_cpu.get(c.gpu_milli, c.cpu_milli), c.cpu_milli)
        follows: set[tuple[int, int]] = set()
        level_done: set[int] = set()
        waits: dict[int, tuple[int, int]] = {}  # used level -> (partner CPU, partner size), the least CPU
        for pat in planned:
            items = sorted(pat.items())
            for counts in product(*(range(n + 1) for _, n in items)):
                total = sum(s * k for (s, _), k in zip(items, counts, strict=True))
                rest = {s for (s, n), k in zip(items, counts, strict=True) if k < n}
                follows.update((total - s, s) for (s, _), k in zip(items, counts, strict=True) if k)
                if total and not rest:
                    level_done.add(total)
                elif total:
                    wait = min((share_cpu.get(s, 0), s) for s in rest)
                    waits[total] = min(waits.get(total, wait), wait)
        return cls(
            tuple(tuple(sorted(p.items())) for p in planned),
            frozenset(follows),
            share_cpu,
            {u: s for u, (_, s) in sorted(waits.items()) if u not in level_done},
        )

    def follows_plan(self, used: int, milli: int) -> bool:
        return (int(used), int(milli)) in self.follows

    def reserved(self, per_size: Mapping[int, int]) -> np.ndarray:
        """[1001] by a GPU's used milli: what its node keeps for the partner the GPU waits for, from
        `per_size` (share size -> the partner's CPU or memory); 0 where the GPU waits for nothing."""
        out = np.zeros(WHOLE_GPU + 1, dtype=np.int64)
        for used, size in self.open_partner.items():
            out[used] = per_size.get(size, 0)
        return out


class ArrivalMemory:
    """Memory per task class, learnt from the pods that have arrived: the median of the class's pods
    (memory is not part of the target workload's classes). A class not seen yet asks none. The estimates are
    re-read when the number of arrivals doubles (`observe` says when), so that measures cached on them stay in step."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, int, int], list[int]] = {}
        self.arrivals = 0
        self._next = 1

    def observe(self, cpu_milli: int, gpu_milli: int, gpu_count: int, memory_mib: int) -> bool:
        """Count one arrival; True when the estimates should be re-read (arrivals 1, 2, 4, 8, ...)."""
        self.seen.setdefault((cpu_milli, gpu_milli if gpu_count else 0, gpu_count), []).append(memory_mib)
        self.arrivals += 1
        if self.arrivals < self._next:
            return False
        self._next *= 2
        return True

    def median(self, cpu_milli: int, gpu_milli: int, gpu_count: int) -> int:
        seen = self.seen.get((cpu_milli, gpu_milli if gpu_count else 0, gpu_count))
        return int(np.median(seen)) if seen else 0

    def of_classes(self, workload: TargetWorkload) -> np.ndarray:
        """[K] the learnt memory of each target class (0 where none has arrived)."""
        return np.asarray(
            [self.median(c.cpu_milli, c.gpu_milli, c.gpu_count) for c in workload.classes], dtype=np.int64
        )


class MultiGpuAsk(NamedTuple):
    """What the arrived whole-GPU tasks of one GPU count ask (`ArrivalMultiGpu.asks`)."""

    demand_share: float  # their GPU milli over the GPU milli of every arrival
    cpu_milli: int  # median
    memory_mib: int  # median


class ArrivalMultiGpu:
    """Whole-GPU tasks of two or more GPUs, learnt from the pods that have arrived: per GPU count, what share
    of the arrived GPU demand they are and the median CPU and memory they ask. They are too rare to be in the
    target workload's classes (on `default`, 75 of 8,152 pods), yet each needs that many idle GPUs on one
    node, which late arrivals use up one by one."""

    def __init__(self) -> None:
        self.gpu_demand = 0
        self.seen: dict[int, list[tuple[int, int]]] = {}  # GPU count -> (CPU milli, memory MiB) per arrival
        self._medians: dict[int, tuple[int, int]] = {}

    def observe(self, cpu_milli: int, memory_mib: int, gpu_milli: int, gpu_count: int) -> None:
        """Count one arrival (`gpu_milli` per GPU)."""
        self.gpu_demand += gpu_milli * gpu_count
        if gpu_count >= 2 and gpu_milli == WHOLE_GPU:
            self.seen.setdefault(gpu_count, []).append((cpu_milli, memory_mib))
            self._medians.pop(gpu_count, None)

    def asks(self) -> dict[int, MultiGpuAsk]:
        """{GPU count: its ask}, for the counts seen so far."""
        out = {}
        for k, seen in self.seen.items():
            if k not in self._medians:
                self._medians[k] = (int(np.median([c for c, _ in seen])), int(np.median([m for _, m in seen])))
            cpu, memory = self._medians[k]
            out[k] = MultiGpuAsk(len(seen) * k * WHOLE_GPU / max(self.gpu_demand, 1), cpu, memory)
        return out
