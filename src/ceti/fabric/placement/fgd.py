"""Fragmentation Gradient Descent (FGD, ATC'23) and the measure it descends.

A node's fragmentation against a target workload is the expected idle GPU milli the next task cannot use:
for each task class, weighted by its popularity, all idle GPU milli count when the class cannot run on the
node at all (wrong GPU model, too little CPU, too few GPUs with enough free), and only the GPUs too small
for it count when it can. CPU-only classes count every idle GPU. Memory is not in the measure.

The node score is an integer, floor(100 * sigmoid(-dF / 1000)) with dF the change in milli-GPU; the
integer steps make many nodes tie, and ties go to the smallest name. Those steps are part of why FGD works
so well: among the nodes that add no fragmentation it keeps filling the same (first-named) ones.

Per-node terms are cached and updated for the one node a placement touches, and a hypothetical placement
is scored from the cached terms plus the change on the touched GPUs, so a decision costs O(classes x
candidates) NumPy work.
"""

from __future__ import annotations

import numpy as np

from ceti.fabric.placement.policies import MAX_NODE_SCORE, Placement, PlacementPolicy, best_option
from ceti.fabric.placement.state import WHOLE_GPU_MILLI, ClusterState, PodRequest, exclusive_gpus
from ceti.fabric.placement.workload import TargetWorkload, WorkloadArrays


class FragCache:
    """Per-class, per-node terms of the fragmentation measure for one cluster state."""

    def __init__(self, state: ClusterState, workload: WorkloadArrays) -> None:
        self.wl = workload
        self.state = state
        self.recompute(state)

    def recompute(self, state: ClusterState) -> None:
        self.version = state.version
        gpu = state.gpu_free
        milli = self.wl.milli[:, None, None]
        self.ge = (gpu[None, :, :] >= milli).sum(axis=2)  # [K, N] GPUs with room for the class
        self.small = (gpu[None, :, :] * (gpu[None, :, :] < milli)).sum(axis=2)  # [K, N] milli too small
        self.total = gpu.sum(axis=1)
        self.access = self.wl.access[:, state.model_idx]  # [K, N]
        self.signature = np.asarray([self._signature(state, i) for i in range(state.size)], dtype=np.int64)
        self.frag = self.frag_of(self.ge, self.small, self.total, state.cpu_free, self.access)

    @staticmethod
    def _signature(state: ClusterState, node: int) -> int:
        """Equal for nodes that FGD (and fabric) see as the same: model, free CPU, free GPUs as a multiset,
        and whether the node holds any work."""
        gpus = tuple(sorted(state.gpu_free[node].tolist()))
        in_use = bool(state.cpu_free[node] < state.cpu_capacity[node]) or sum(gpus) < WHOLE_GPU_MILLI * int(
            state.gpu_count[node]
        )
        return hash((int(state.model_idx[node]), int(state.cpu_free[node]), gpus, in_use))

    def distinct(self, nodes: np.ndarray, prefer: np.ndarray | None = None) -> np.ndarray:
        """The first (smallest-name) node of each distinct signature, in order: the only ones a tie-break
        to the smallest name can pick, so scoring the rest is wasted work. With `prefer` (per node, the
        caller's tie-break before the name), nodes alike but preferred differently stay apart."""
        key = self.signature[nodes]
        if prefer is not None:
            key = np.column_stack((key, prefer[nodes].astype(np.float64).view(np.int64)))
        _, first = np.unique(key, axis=0, return_index=True)
        first.sort()
        return nodes[first]

    def update_node(self, state: ClusterState, node: int) -> None:
        self.signature[node] = self._signature(state, node)
        row = state.gpu_free[node]
        milli = self.wl.milli[:, None]
        self.ge[:, node] = (row[None, :] >= milli).sum(axis=1)
        self.small[:, node] = (row[None, :] * (row[None, :] < milli)).sum(axis=1)
        self.total[node] = row.sum()
        self.frag[node] = self.frag_of(
            self.ge[:, node : node + 1],
            self.small[:, node : node + 1],
            self.total[node : node + 1],
            state.cpu_free[node : node + 1],
            self.access[:, node : node + 1],
        )[0]
        self.version = state.version

    def sync(self, state: ClusterState) -> None:
        if state is not self.state:
            self.state = state
            self.recompute(state)
        elif state.version == self.version + 1 and state.last_changed >= 0:
            self.update_node(state, state.last_changed)
        elif 0 < state.version - self.version <= 64 and len(state.change_log) == state.version:
            # a few changes since the last look (departures between two arrivals): update just those nodes
            for node in sorted(set(state.change_log[self.version : state.version])):
                self.update_node(state, node)
            self.version = state.version
        elif state.version != self.version:
            self.recompute(state)

    def frag_of(
        self, ge: np.ndarray, small: np.ndarray, total: np.ndarray, cpu: np.ndarray, access: np.ndarray
    ) -> np.ndarray:
        """Expected fragmented milli-GPU per column, from the per-class terms."""
        wl = self.wl
        fits = access & wl.is_gpu[:, None] & (cpu[None, :] >= wl.cpu[:, None]) & (ge >= wl.count[:, None])
        return wl.prob @ np.where(fits, small, total[None, :])

    def options(
        self, state: ClusterState, pod: PodRequest, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every way to place `pod` on `nodes`: (node, gpu or -1, fragmentation after), in (node, gpu) order.

        A share may go on any GPU with room (GPUs of a node with equal free milli are one option, the
        lowest index); whole GPUs go on the lowest-index free ones.
        """
        cpu_after = state.cpu_free[nodes] - pod.cpu_milli
        if not pod.is_share:
            n = pod.gpu_count
            ge = self.ge[:, nodes] - (n if pod.gpu_milli > 0 else 0)
            total = self.total[nodes] - pod.gpu_milli_total
            after = self.frag_of(ge, self.small[:, nodes], total, cpu_after, self.access[:, nodes])
            return nodes, np.full(len(nodes), -1), after
        m = pod.gpu_milli
        free = state.gpu_free[nodes]
        rows, gpus = np.nonzero(free >= m)  # row-major: (node, gpu) order
        a = free[rows, gpus]
        # GPUs of one node with the same free milli are the same option: keep the lowest index
        key = rows * 2048 + a
        _, first = np.unique(key, return_index=True)
        first.sort()
        rows, gpus, a = rows[first], gpus[first], a[first]
        a2 = a - m
        milli = self.wl.milli[:, None]
        opt_nodes = nodes[rows]
        ge = self.ge[:, opt_nodes] - (a[None, :] >= milli) + (a2[None, :] >= milli)
        small = (
            self.small[:, opt_nodes] - a[None, :] * (a[None, :] < milli) + a2[None, :] * (a2[None, :] < milli)
        )
        total = self.total[opt_nodes] - m
        after = self.frag_of(ge, small, total, cpu_after[rows], self.access[:, opt_nodes])
        return opt_nodes, gpus, after


def fgd_score(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """floor(100 * sigmoid((before - after) / 1000)): 50 = no change, higher = less fragmentation."""
    sig = 1.0 / (1.0 + np.exp(-((before - after) / 1000)))
    return (sig * MAX_NODE_SCORE).astype(np.int64)


class FGDPolicy(PlacementPolicy):
    name = "fgd"
    needs_workload = True

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        super().__init__(workload)
        self._cache: FragCache | None = None
        self._models: list[str] | None = None

    def cache(self, state: ClusterState, pod: PodRequest) -> FragCache:
        workload = self.workload
        if workload is None or len(workload) == 0:  # no trace to learn from: the task itself is the target
            from ceti.fabric.placement.workload import TaskClass

            spec = (
                "|".join(m for m, ok in zip(state.models, pod.model_ok, strict=True) if ok and m)
                if (pod.model_ok is not None and pod.gpu_count)
                else ""
            )
            workload = TargetWorkload((TaskClass(pod.cpu_milli, pod.gpu_milli, pod.gpu_count, spec),), (1.0,))
            return FragCache(state, WorkloadArrays.build(workload, state.models))
        kind = self.cache_type()
        if type(self._cache) is not kind or self._models is not state.models:
            self._models = state.models
            self._cache = kind(state, WorkloadArrays.build(workload, state.models))
        else:
            self._cache.sync(state)
        return self._cache

    def cache_type(self) -> type[FragCache]:
        """The cache kept across placements for a learnt workload (a subclass may tell nodes apart by more)."""
        return FragCache

    def option_scores(
        self, cache: FragCache, state: ClusterState, pod: PodRequest, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        opt_nodes, gpus, after = cache.options(state, pod, nodes)
        return opt_nodes, gpus, fgd_score(cache.frag[opt_nodes], after)

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
        cache = self.cache(state, pod)
        nodes = cache.distinct(nodes, prefer)
        opt_nodes, gpus, scores = self.option_scores(cache, state, pod, nodes)
        best = best_option(scores, None if prefer is None else prefer[opt_nodes])  # ties: smallest name, GPU
        node = int(opt_nodes[best])
        if pod.is_share:
            return node, (int(gpus[best]),)
        if pod.gpu_count == 0:
            return node, ()
        return node, exclusive_gpus(state.gpu_free[node], pod.gpu_count)

    def score(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray) -> np.ndarray:
        cache = self.cache(state, pod)
        opt_nodes, _, scores = self.option_scores(cache, state, pod, nodes)
        best = np.full(state.size, -1, dtype=np.int64)
        np.maximum.at(best, opt_nodes, scores)
        return best[nodes]
