"""`fabric`: our placement policy, FGD's fragmentation measure plus GPU-model protection.

(docstring rewritten once the variants are screened)
"""

from __future__ import annotations

import numpy as np

from ceti.fabric.placement.fgd import FGDPolicy, FragCache, fgd_score
from ceti.fabric.placement.policies import Placement
from ceti.fabric.placement.state import WHOLE_GPU_MILLI, ClusterState, PodRequest, exclusive_gpus
from ceti.fabric.placement.workload import TargetWorkload, WorkloadArrays


class PlaceableCache(FragCache):
    """A CPU-aware fragmentation measure: per class, the idle GPU milli a node cannot turn into copies of
    that class. Copies are limited by GPUs (sum over GPUs of floor(free / milli), divided by the class's GPU
    count) and by free CPU (floor(free CPU / class CPU)); what they do not use is fragmented. A class that
    cannot run on the node's model, and a CPU-only class, count every idle GPU, as in FGD."""

    def recompute(self, state: ClusterState) -> None:
        self.version = state.version
        gpu = state.gpu_free
        self.milli_safe = np.maximum(self.wl.milli, 1)
        self.units = (gpu[None, :, :] // self.milli_safe[:, None, None]).sum(axis=2)  # [K, N]
        self.total = gpu.sum(axis=1)
        self.access = self.wl.access[:, state.model_idx]
        self.signature = np.asarray([self._signature(state, i) for i in range(state.size)], dtype=np.int64)
        self.frag = self.frag_of(self.units, None, self.total, state.cpu_free, self.access)

    def update_node(self, state: ClusterState, node: int) -> None:
        self.signature[node] = self._signature(state, node)
        row = state.gpu_free[node]
        self.units[:, node] = (row[None, :] // self.milli_safe[:, None]).sum(axis=1)
        self.total[node] = row.sum()
        self.frag[node] = self.frag_of(
            self.units[:, node : node + 1],
            None,
            self.total[node : node + 1],
            state.cpu_free[node : node + 1],
            self.access[:, node : node + 1],
        )[0]
        self.version = state.version

    def frag_of(self, units, small, total, cpu, access):  # type: ignore[override]
        wl = self.wl
        by_cpu = np.where(wl.cpu[:, None] > 0, cpu[None, :] // np.maximum(wl.cpu[:, None], 1), 1 << 40)
        copies = np.minimum(units // np.maximum(wl.count[:, None], 1), by_cpu)
        usable = np.minimum(copies * (wl.milli * wl.count)[:, None], total[None, :])
        fits = access & wl.is_gpu[:, None]
        return wl.prob @ np.where(fits, total[None, :] - usable, total[None, :])

    def options(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray):  # type: ignore[override]
        cpu_after = state.cpu_free[nodes] - pod.cpu_milli
        ms = self.milli_safe[:, None]
        if not pod.is_share:
            units = self.units[:, nodes]
            if pod.gpu_milli > 0:
                lost = WHOLE_GPU_MILLI // ms - (WHOLE_GPU_MILLI - pod.gpu_milli) // ms
                units = units - pod.gpu_count * lost
            total = self.total[nodes] - pod.gpu_milli_total
            after = self.frag_of(units, None, total, cpu_after, self.access[:, nodes])
            return nodes, np.full(len(nodes), -1), after
        m = pod.gpu_milli
        free = state.gpu_free[nodes]
        rows, gpus = np.nonzero(free >= m)
        a = free[rows, gpus]
        key = rows * 2048 + a
        _, first = np.unique(key, return_index=True)
        first.sort()
        rows, gpus, a = rows[first], gpus[first], a[first]
        opt_nodes = nodes[rows]
        units = self.units[:, opt_nodes] - a[None, :] // ms + (a - m)[None, :] // ms
        total = self.total[opt_nodes] - m
        after = self.frag_of(units, None, total, cpu_after[rows], self.access[:, opt_nodes])
        return opt_nodes, gpus, after


class FabricPolicy(FGDPolicy):
    name = "fabric"
    protect = "dynamic"  # none | static | dynamic
    protect_mode = "penalty"  # penalty | primary
    protect_cap = 1.0
    tie = "pressure"  # pressure | bestfit | none
    measure = "placeable"  # fgd | placeable

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        super().__init__(workload)
        self._share: tuple[object, object, np.ndarray] | None = None

    def cache(self, state: ClusterState, pod: PodRequest) -> FragCache:
        if self.measure == "fgd" or self.workload is None or len(self.workload) == 0:
            return super().cache(state, pod)
        if self._cache is None or self._models is not state.models:
            self._models = state.models
            self._cache = PlaceableCache(state, WorkloadArrays.build(self.workload, state.models))
        else:
            self._cache.sync(state)
        return self._cache

    def reserved_share(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: the share of the target workload's GPU demand that only that model's nodes can
        serve (type-constrained classes; a class that accepts several models is split over them in
        proportion to their GPUs). 0 for a model no class is constrained to."""
        if self._share is not None and self._share[0] is state.models and self._share[1] is wl:
            return self._share[2]
        gpu_model = np.asarray([bool(m) for m in state.models])
        constrained = wl.is_gpu & (~wl.access[:, gpu_model]).any(axis=1)
        capacity = np.bincount(state.model_idx, weights=state.gpu_count, minlength=len(state.models))
        demand = wl.prob * wl.milli * wl.count  # expected milli per arriving task, by class
        total = float(demand.sum())
        cap_acc = wl.access * capacity[None, :]  # [K, M]
        split = cap_acc / np.maximum(cap_acc.sum(axis=1, keepdims=True), 1)
        share = ((demand * constrained)[:, None] * split).sum(axis=0) / total if total > 0 else np.zeros(
            len(state.models)
        )
        self._share = (state.models, wl, share)
        return share

    def load_factor(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: constrained demand still to come over the model's free GPU milli."""
        share = self.reserved_share(state, wl)
        if self.protect == "static":
            cap = np.bincount(state.model_idx, weights=state.gpu_count, minlength=len(state.models))
            return share * cap.sum() / np.maximum(cap, 1e-9)
        free_m = np.bincount(state.model_idx, weights=state.gpu_free.sum(axis=1), minlength=len(state.models))
        free_total = float(free_m.sum())
        return share * free_total / np.maximum(free_m, 1.0)

    def place(self, state: ClusterState, pod: PodRequest, rng: np.random.Generator) -> Placement | None:
        nodes = np.flatnonzero(self.filter(state, pod))
        if len(nodes) == 0:
            return None
        cache = self.cache(state, pod)
        nodes = cache.distinct(nodes)
        opt_nodes, gpus, after = cache.options(state, pod, nodes)
        models = state.model_idx[opt_nodes]
        penalty = np.zeros(len(opt_nodes))
        if self.protect != "none" and pod.gpu_count > 0:
            load = np.minimum(self.load_factor(state, cache.wl), self.protect_cap)
            penalty = load[models] * pod.gpu_milli_total
        if self.protect_mode == "penalty":
            score = fgd_score(cache.frag[opt_nodes], after + penalty)
            primary = np.zeros(len(opt_nodes))
        else:
            score = fgd_score(cache.frag[opt_nodes], after)
            primary = penalty
        in_use = (state.cpu_free[opt_nodes] < state.cpu_capacity[opt_nodes]) | (
            state.gpu_free[opt_nodes].sum(axis=1) < WHOLE_GPU_MILLI * state.gpu_count[opt_nodes]
        )
        if self.tie == "pressure":
            second = self.reserved_share(state, cache.wl)[models]
        elif self.tie == "bestfit":
            second = (state.cpu_free[opt_nodes] - pod.cpu_milli) / 128_000 + (
                state.gpu_free[opt_nodes].sum(axis=1) - pod.gpu_milli_total
            ) / 8_000
        else:
            second = np.zeros(len(opt_nodes))
        # lexsort: last key is primary; options are in (node, gpu) order, so ties keep the smallest name
        best = int(np.lexsort((~in_use, second, -score, primary))[0])
        node = int(opt_nodes[best])
        if pod.is_share:
            return node, (int(gpus[best]),)
        if pod.gpu_count == 0:
            return node, ()
        return node, exclusive_gpus(state.gpu_free[node], pod.gpu_count)
