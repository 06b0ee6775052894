"""Cluster state as NumPy arrays, the shape every placement policy scores against.

One row per node, sorted by node name so that "the smallest name" is "the smallest index". GPU slots are a
fixed [nodes x 8] array of free milli-GPU; slots a node does not have hold 0, which no GPU request fits
and which adds nothing to any sum, so they need no special case. Memory is only ever a feasibility check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

WHOLE_GPU_MILLI = 1000
MAX_GPUS_PER_NODE = 8

# GPU-clustering's affinity tags: what kind of GPU work a node already holds.
TAG_NONE = -1
TAG_SHARE = 0  # tag index k >= 1 means "k whole GPUs"


def affinity_tag(gpu_count: int, gpu_milli: int) -> int:
    if gpu_count == 0:
        return TAG_NONE
    if gpu_milli < WHOLE_GPU_MILLI:
        return TAG_SHARE
    return gpu_count


@dataclass(frozen=True, slots=True)
class PodRequest:
    """One task's request, as the fast path sees it.

    `gpu_milli` is per GPU (1000 = whole GPUs, less = a share of one GPU, 0 = no GPU). `model_ok` is a
    boolean mask over the cluster's model index (None = any model); it only applies to GPU requests.
    """

    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_milli: int = 0
    model_ok: np.ndarray | None = None

    @property
    def is_share(self) -> bool:
        return self.gpu_count == 1 and 0 < self.gpu_milli < WHOLE_GPU_MILLI

    @property
    def gpu_milli_total(self) -> int:
        return self.gpu_count * self.gpu_milli

    @property
    def tag(self) -> int:
        return affinity_tag(self.gpu_count, self.gpu_milli)


@dataclass(slots=True)
class ClusterState:
    names: list[str]
    models: list[str]  # model index -> name; index 0 is "" (no GPU)
    model_idx: np.ndarray  # [N] int
    gpu_count: np.ndarray  # [N] int
    cpu_capacity: np.ndarray  # [N] int64
    memory_capacity: np.ndarray  # [N] int64
    cpu_free: np.ndarray  # [N] int64
    memory_free: np.ndarray  # [N] int64
    gpu_free: np.ndarray  # [N, 8] int64, free milli per GPU slot
    tag_mask: np.ndarray  # [N] int64 bitmask of affinity tags placed on the node
    version: int = 0  # bumped on every change; lets policies cache per-state work
    last_changed: int = -1  # the node the last change touched
    change_log: list[int] = field(default_factory=list)  # change_log[v] = the node version v+1 touched
    _tag_bits: dict[int, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        cpu_milli: Sequence[int],
        memory_mib: Sequence[int],
        gpu_models: Sequence[str],
        gpu_free_milli: Sequence[Sequence[int]],
        cpu_free: Sequence[int] | None = None,
        memory_free: Sequence[int] | None = None,
        models: Sequence[str] | None = None,
    ) -> ClusterState:
        order = sorted(range(len(names)), key=lambda i: names[i])
        model_list = [""] + sorted({m for m in gpu_models if m})
        if models is not None:  # a fixed model index, extended by any model it lacks
            model_list = [""] + [m for m in models if m]
            model_list += sorted({m for m in gpu_models if m} - set(model_list))
        index = {m: i for i, m in enumerate(model_list)}
        n = len(names)
        gpu = np.zeros((n, MAX_GPUS_PER_NODE), dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        for row, i in enumerate(order):
            free = list(gpu_free_milli[i])
            if len(free) > MAX_GPUS_PER_NODE:
                raise ValueError(f"node {names[i]} has more than {MAX_GPUS_PER_NODE} GPUs")
            gpu[row, : len(free)] = free
            count[row] = len(free)
        cpu = np.asarray([cpu_milli[i] for i in order], dtype=np.int64)
        mem = np.asarray([memory_mib[i] for i in order], dtype=np.int64)
        return cls(
            names=[names[i] for i in order],
            models=model_list,
            model_idx=np.asarray([index[gpu_models[i] or ""] for i in order], dtype=np.int64),
            gpu_count=count,
            cpu_capacity=cpu,
            memory_capacity=mem,
            cpu_free=cpu.copy() if cpu_free is None else np.asarray([cpu_free[i] for i in order], np.int64),
            memory_free=mem.copy()
            if memory_free is None
            else np.asarray([memory_free[i] for i in order], np.int64),
            gpu_free=gpu,
            tag_mask=np.zeros(n, dtype=np.int64),
        )

    def copy_empty(self) -> ClusterState:
        """The same nodes with nothing placed."""
        gpu = np.zeros_like(self.gpu_free)
        for k in range(MAX_GPUS_PER_NODE):
            gpu[:, k] = np.where(self.gpu_count > k, WHOLE_GPU_MILLI, 0)
        return ClusterState(
            names=self.names,
            models=self.models,
            model_idx=self.model_idx,
            gpu_count=self.gpu_count,
            cpu_capacity=self.cpu_capacity,
            memory_capacity=self.memory_capacity,
            cpu_free=self.cpu_capacity.copy(),
            memory_free=self.memory_capacity.copy(),
            gpu_free=gpu,
            tag_mask=np.zeros_like(self.tag_mask),
        )

    @property
    def size(self) -> int:
        return len(self.names)

    def model_mask(self, models: frozenset[str] | set[str]) -> np.ndarray:
        """Boolean mask over model indices for a gpu_spec (empty = any)."""
        if not models:
            return np.ones(len(self.models), dtype=bool)
        return np.asarray([m in models for m in self.models], dtype=bool)

    def feasible(self, pod: PodRequest) -> np.ndarray:
        """The kube-scheduler filter: CPU, memory, GPU model, and enough GPU on single GPUs."""
        ok = (self.cpu_free >= pod.cpu_milli) & (self.memory_free >= pod.memory_mib)
        if pod.gpu_count > 0:
            if pod.model_ok is not None:
                ok &= pod.model_ok[self.model_idx]
            ok &= (self.gpu_free >= pod.gpu_milli).sum(axis=1) >= pod.gpu_count
        return ok

    def gpu_total_free(self) -> np.ndarray:
        return self.gpu_free.sum(axis=1)

    def allocate(self, node: int, pod: PodRequest, gpus: Sequence[int]) -> None:
        if pod.gpu_count and len(gpus) != pod.gpu_count:
            raise ValueError(f"pod asks {pod.gpu_count} GPUs, {len(gpus)} given")
        if self.cpu_free[node] < pod.cpu_milli or self.memory_free[node] < pod.memory_mib:
            raise ValueError(f"node {self.names[node]} lacks CPU or memory")
        for g in gpus:
            if g >= self.gpu_count[node] or self.gpu_free[node, g] < pod.gpu_milli:
                raise ValueError(f"GPU {g} of node {self.names[node]} lacks {pod.gpu_milli} milli")
        self.cpu_free[node] -= pod.cpu_milli
        self.memory_free[node] -= pod.memory_mib
        for g in gpus:
            self.gpu_free[node, g] -= pod.gpu_milli
        if pod.tag != TAG_NONE:
            self.tag_mask[node] |= 1 << pod.tag
        self._changed(node)

    def release(self, node: int, pod: PodRequest, gpus: Sequence[int]) -> None:
        """Give back what `allocate(node, pod, gpus)` took (a departure or a pre-emption). A node that
        becomes empty forgets its affinity tags; one that still holds work keeps them (they are a hint)."""
        for g in gpus:
            if self.gpu_free[node, g] + pod.gpu_milli > WHOLE_GPU_MILLI:
                raise ValueError(f"GPU {g} of node {self.names[node]} would hold more than a whole GPU")
        self.cpu_free[node] += pod.cpu_milli
        self.memory_free[node] += pod.memory_mib
        for g in gpus:
            self.gpu_free[node, g] += pod.gpu_milli
        if self.cpu_free[node] == self.cpu_capacity[node] and (
            self.gpu_free[node, : self.gpu_count[node]] == WHOLE_GPU_MILLI
        ).all():
            self.tag_mask[node] = 0
        self._changed(node)

    def _changed(self, node: int) -> None:
        self.change_log.append(node)
        self.version += 1
        self.last_changed = node

    def used_gpu_milli(self) -> int:
        return int((self.gpu_count * WHOLE_GPU_MILLI).sum() - self.gpu_free.sum())

    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum() * WHOLE_GPU_MILLI)


def exclusive_gpus(free_row: np.ndarray, count: int) -> tuple[int, ...]:
    """The lowest-index fully free GPUs (the Go simulator's rule for whole-GPU requests)."""
    idx = np.flatnonzero(free_row == WHOLE_GPU_MILLI)[:count]
    return tuple(int(i) for i in idx)


def tightest_gpu(free_row: np.ndarray, milli: int) -> int:
    """The GPU with the least free milli that still fits `milli`; the lowest index on a tie."""
    fits = np.where(free_row >= milli, free_row, np.iinfo(np.int64).max)
    return int(np.argmin(fits))
