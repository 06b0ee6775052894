"""`fabric`: our placement policy, FGD's fragmentation measure with two tie-breaks.

FGD's integer scores tie often; FGD then takes the smallest name. Among the tied nodes fabric prefers
(1) the GPU model least wanted by the type-constrained classes of the target workload (GPU demand of the
classes that may use the model, shared over the models each class accepts, per GPU of that model), so
tasks that could run anywhere leave the scarce models to those that cannot; (2) a node that already holds
work (CPU or GPU in use), keeping idle nodes whole for the large tasks that need them; then the smallest
name. Measured on the openb traces (docs/sim-inflation.md) this is a
small, consistent gain over FGD, well short of the 20% we aimed for: finer or coarser score steps, GPU-
weighted target classes and best-fit tie-breaks each helped one trace and hurt another.
"""

from __future__ import annotations

import numpy as np

from ceti.fabric.placement.fgd import FGDPolicy, fgd_score
from ceti.fabric.placement.policies import Placement
from ceti.fabric.placement.state import ClusterState, PodRequest, exclusive_gpus
from ceti.fabric.placement.workload import TargetWorkload, WorkloadArrays


class FabricPolicy(FGDPolicy):
    name = "fabric"

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        super().__init__(workload)
        self._pressure: tuple[object, object, np.ndarray] | None = None

    def model_pressure(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: constrained GPU demand per GPU of the model (0 when nothing is constrained)."""
        if self._pressure is not None and self._pressure[0] is state.models and self._pressure[1] is wl:
            return self._pressure[2]
        gpu_model = np.asarray([bool(m) for m in state.models])
        constrained = wl.is_gpu & (~wl.access[:, gpu_model]).any(axis=1)
        accepted = wl.access.sum(axis=1)
        demand = np.where(
            accepted > 0, wl.prob * wl.milli * wl.count * constrained / np.maximum(accepted, 1), 0
        )
        capacity = np.bincount(state.model_idx, weights=state.gpu_count, minlength=len(state.models))
        pressure = (demand[:, None] * wl.access).sum(axis=0) / np.maximum(capacity, 1)
        self._pressure = (state.models, wl, pressure)
        return pressure

    def place(self, state: ClusterState, pod: PodRequest, rng: np.random.Generator) -> Placement | None:
        nodes = np.flatnonzero(self.filter(state, pod))
        if len(nodes) == 0:
            return None
        cache = self.cache(state, pod)
        nodes = cache.distinct(nodes)
        opt_nodes, gpus, after = cache.options(state, pod, nodes)
        score = fgd_score(cache.frag[opt_nodes], after)
        pressure = self.model_pressure(state, cache.wl)[state.model_idx[opt_nodes]]
        in_use = (state.cpu_free[opt_nodes] < state.cpu_capacity[opt_nodes]) | (
            state.gpu_free[opt_nodes].sum(axis=1) < 1000 * state.gpu_count[opt_nodes]
        )
        # lexsort: last key is primary; options are in (node, gpu) order, so ties keep the smallest name
        best = int(np.lexsort((~in_use, pressure, -score))[0])
        node = int(opt_nodes[best])
        if pod.is_share:
            return node, (int(gpus[best]),)
        if pod.gpu_count == 0:
            return node, ()
        return node, exclusive_gpus(state.gpu_free[node], pod.gpu_count)
