"""The target workload FGD measures fragmentation against: the popular task classes of a trace.

A class is (CPU milli, GPU milli per GPU, GPU count, GPU-type constraint as written). Classes are counted
once per pod, sorted by count (ties: the larger class first), and the most common ones covering 95% of the
pods are kept and renormalised, as the FGD paper's simulator does. CPU-only classes are included: FGD
counts every idle GPU as fragmented for them, which rewards using GPUs at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
