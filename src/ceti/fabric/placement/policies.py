"""Placement policies: small objects with the kube-scheduler framework's extension points.

`filter` says which nodes can take a task, `score` ranks them (higher is better, integers like the
framework's 0-100 node scores), and `pick_gpus` chooses GPUs on the winner. `place` strings them together:
the highest score wins, ties go to the node with the smallest name (the Go simulator's deterministic
`selectHost`). The baselines follow the FGD paper's open-source simulator
(hkust-adsl/kubernetes-scheduler-simulator): their integer truncations and tie-breaks matter to the results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ceti.fabric.placement.state import (
    TAG_NONE,
    WHOLE_GPU_MILLI,
    ClusterState,
    PodRequest,
    exclusive_gpus,
    tightest_gpu,
)
from ceti.fabric.placement.workload import TargetWorkload

MAX_NODE_SCORE = 100
MAX_SPEC_CPU_MILLI = 128_000  # the simulator's normalisers for the [CPU, GPU] vectors
MAX_SPEC_GPU_MILLI = 8_000

Placement = tuple[int, tuple[int, ...]]


class PlacementPolicy:
    """Base policy: kube-scheduler's feasibility filter, no preference, tightest GPU for a share."""

    name = "base"
    needs_workload = False

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        self.workload = workload

    def filter(self, state: ClusterState, pod: PodRequest, allowed: np.ndarray | None = None) -> np.ndarray:
        """Nodes that can take the task; `allowed` (a mask over nodes) narrows them further."""
        ok = state.feasible(pod)
        return ok if allowed is None else ok & allowed

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        """Integer scores for the feasible `nodes` (indices), higher is better."""
        return np.zeros(len(nodes), dtype=np.int64)

    def pick_gpus(
        self, state: ClusterState, pod: PodRequest, node: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        if pod.gpu_count == 0:
            return ()
        if pod.is_share:
            return (tightest_gpu(state.gpu_free[node], pod.gpu_milli),)
        return exclusive_gpus(state.gpu_free[node], pod.gpu_count)

    def place(
        self,
        state: ClusterState,
        pod: PodRequest,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
        prefer: np.ndarray | None = None,
    ) -> Placement | None:
        """The best-scoring node that can take the task (and GPUs on it), or None. `allowed` narrows the nodes
        (a mask); `prefer` (per node, lower first) breaks ties in the score before the smallest name does."""
        nodes = np.flatnonzero(self.filter(state, pod, allowed))
        if len(nodes) == 0:
            return None
        scores = self.score(state, pod, nodes)
        node = int(nodes[best_option(scores, None if prefer is None else prefer[nodes])])
        return node, self.pick_gpus(state, pod, node, rng)


def best_option(scores: np.ndarray, prefer: np.ndarray | None = None) -> int:
    """Index of the highest score; among equal scores the lowest `prefer` (if given), then the first (options
    come in node-name order, so: the smallest name, the Go simulator's `selectHost`)."""
    if prefer is None:
        return int(np.argmax(scores))
    return int(np.lexsort((prefer, -scores))[0])  # stable


class RandomPolicy(PlacementPolicy):
    """A feasible node uniformly at random, then a fitting GPU uniformly at random."""

    name = "random"

    def place(
        self,
        state: ClusterState,
        pod: PodRequest,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
        prefer: np.ndarray | None = None,
    ) -> Placement | None:
        nodes = np.flatnonzero(self.filter(state, pod, allowed))
        if len(nodes) == 0:
            return None
        node = int(nodes[int(rng.integers(len(nodes)))])  # uniformly: no preference
        return node, self.pick_gpus(state, pod, node, rng)

    def pick_gpus(
        self, state: ClusterState, pod: PodRequest, node: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        if pod.is_share:
            fits = np.flatnonzero(state.gpu_free[node] >= pod.gpu_milli)
            return (int(fits[int(rng.integers(len(fits)))]),)
        return super().pick_gpus(state, pod, node, rng)


class FirstFitPolicy(PlacementPolicy):
    """The first feasible node by name, the first GPU that fits (lowest index)."""

    name = "first-fit"

    def pick_gpus(
        self, state: ClusterState, pod: PodRequest, node: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        if pod.is_share:
            return (int(np.argmax(state.gpu_free[node] >= pod.gpu_milli)),)
        return super().pick_gpus(state, pod, node, rng)


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """The framework's min-max normalisation to 0-100, in integer arithmetic; all equal -> all 0."""
    lo, hi = int(scores.min()), int(scores.max())
    if hi == lo:
        return np.zeros_like(scores)
    return (scores - lo) * MAX_NODE_SCORE // (hi - lo)


class BestFitPolicy(PlacementPolicy):
    """Least weighted leftover of [CPU, GPU] after placing (weights 0.5/0.5, normalised by max specs)."""

    name = "best-fit"

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        cpu_left = (state.cpu_free[nodes] - pod.cpu_milli).astype(np.float64)
        gpu_left = (state.gpu_free[nodes].sum(axis=1) - pod.gpu_milli_total).astype(np.float64)
        leftover = cpu_left / MAX_SPEC_CPU_MILLI * 0.5
        leftover = leftover + gpu_left / MAX_SPEC_GPU_MILLI * 0.5
        raw = ((1.0 - leftover) * MAX_NODE_SCORE).astype(np.int64)
        return normalize_scores(raw)


class DotProductPolicy(PlacementPolicy):
    """Smallest dot product of the task's and the node's free [CPU, GPU] vectors (Tetris-like)."""

    name = "dot-product"

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        node_cpu = state.cpu_free[nodes].astype(np.float64) / MAX_SPEC_CPU_MILLI
        node_gpu = state.gpu_free[nodes].sum(axis=1).astype(np.float64) / MAX_SPEC_GPU_MILLI
        pod_cpu = float(pod.cpu_milli) / MAX_SPEC_CPU_MILLI
        pod_gpu = float(pod.gpu_milli_total) / MAX_SPEC_GPU_MILLI
        dot = node_cpu * pod_cpu + node_gpu * pod_gpu
        return (MAX_NODE_SCORE * (1 - dot / 2)).astype(np.int64)


class GpuPackingPolicy(PlacementPolicy):
    """Prefer partly used GPUs, then partly used nodes, then idle nodes (fewest GPUs first)."""

    name = "gpu-packing"

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        if pod.gpu_milli <= 0:
            return np.zeros(len(nodes), dtype=np.int64)
        free = state.gpu_free[nodes]
        count = state.gpu_count[nodes]
        fully_free = (free == WHOLE_GPU_MILLI).sum(axis=1)
        idle_node = fully_free == count
        idle_score = np.maximum(MAX_NODE_SCORE // 3 - fully_free, fully_free)
        if pod.is_share:
            fits = np.where(free >= pod.gpu_milli, free, np.iinfo(np.int64).max)
            chosen = fits.min(axis=1)
            uses_free = chosen == WHOLE_GPU_MILLI
            free_score = np.full(len(nodes), max(MAX_NODE_SCORE // 2 - 1, MAX_NODE_SCORE // 3))
            shared_score = np.maximum(MAX_NODE_SCORE - (chosen * 100 // WHOLE_GPU_MILLI) // 10, 50)
            busy = np.where(uses_free, free_score, shared_score)
        else:  # whole GPUs: every chosen GPU is fully free
            busy = np.full(len(nodes), max(MAX_NODE_SCORE // 2 - pod.gpu_count, MAX_NODE_SCORE // 3))
        return np.where(idle_node, idle_score, busy).astype(np.int64)


class GpuClusteringPolicy(PlacementPolicy):
    """Keep tasks of one GPU shape together: nodes holding only that shape, then mixed, idle, others."""

    name = "gpu-clustering"

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        tag = pod.tag
        if tag == TAG_NONE:
            return np.zeros(len(nodes), dtype=np.int64)
        mask = state.tag_mask[nodes]
        bit = 1 << tag
        used = (MAX_NODE_SCORE // 4) * (MAX_SPEC_GPU_MILLI - state.gpu_free[nodes].sum(axis=1))
        base = used // MAX_SPEC_GPU_MILLI
        quarter = MAX_NODE_SCORE // 4
        band = np.where(
            (mask & bit) != 0,
            np.where(mask == bit, 3 * quarter, 2 * quarter),
            np.where(mask == 0, quarter, 0),
        )
        return (base + band).astype(np.int64)


PolicyFactory = Callable[[TargetWorkload | None], PlacementPolicy]
