"""`fabric`: our placement policy: FGD's score, GPU-model protection, a CPU-aware tie-break.

Each way to place a task (node, and GPU for a share) is ranked by, in order:

0. For a GPU share: whether it follows the workload's share plan on that GPU (`SharePlan`: the pairings a
   packing LP on the target workload's class mix uses, e.g. 650 + 320, 470 + 470, 810 alone or with 160):
   the GPU's used milli plus the share is part of a planned pattern. FGD's measure is dominated by whole-GPU
   and CPU-only classes, so it pairs a 320 with a lone 470 (leaving 210 milli that only rare small shares
   fill) rather than open a GPU that a 650 would complete; the plan keeps such pairings for last. A share
   that leaves its planned pattern incomplete follows the plan only where the node keeps the CPU of a
   partner that could complete it (`SharePlan.partner_cpu`): FGD likes GPUs whose node has run out of CPU
   (using them lowers its measure), and a share put there strands the rest of its GPU. Where no option
   follows the plan (or the size is not in it), the keys below decide alone.
1. FGD's integer score, floor(100 * sigmoid(-(dF + charge) / 1000)), where dF is the change in FGD's
   fragmentation measure and `charge` is a model-protection charge in the same unit (milli-GPU): the task's
   GPU milli times min(1, load factor of the node's GPU model). The load factor is the GPU demand of the
   target workload that only that model can serve (type-constrained classes, split over the models they
   accept by GPUs), scaled to the cluster's free GPUs, over the model's own free GPUs: the share of what is
   left of the model that constrained work will still want. A task that can go elsewhere pays for the
   constrained work it would displace; a task constrained to the model pays the same on all its options.
2. The change in the "placeable" measure (+ the same charge): per target class, idle GPU milli that cannot
   become copies of the class, copies limited by GPUs (sum of floor(free / milli) over GPUs, over the GPU
   count) and by free CPU. FGD asks only whether one copy fits, so CPU-only tasks and CPU-heavy tasks look
   free to it on nodes with little CPU per GPU; this key sends them where CPU is to spare.
3. A node already in use, keeping idle nodes whole; then the smallest name (lowest GPU index).

Key 0 and key 2 assume work only arrives (the inflation experiment); the trace replay, where work leaves,
turns both off (`placeable_tiebreak`). An offline bound (`ceti sim bound`) showed how far placements were from
the best packing of the arrived pods, and which pairings the gap was made of.

Why (docs/sim-inflation.md): on the openb `gpuspec33` trace FGD lets unconstrained and CPU-only tasks use
up the CPU and GPUs of the scarce models (G3, P100, V100) and leaves G2 nodes idle while constrained tasks
fail; first-fit beats it by filling one node order, so constrained tasks, which arrive faster relative to
their model's size, fill their models ahead of the unconstrained front. Both keys are learnt from the
trace's class distribution only, the same code and constants for every trace.
"""

from __future__ import annotations

import numpy as np

from ceti.fabric.placement.fgd import FGDPolicy, FragCache, fgd_score
from ceti.fabric.placement.policies import Placement
from ceti.fabric.placement.state import WHOLE_GPU_MILLI, ClusterState, PodRequest, exclusive_gpus
from ceti.fabric.placement.workload import SharePlan, TargetWorkload, WorkloadArrays


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
        """`units` [K, C]: per class, sum over the GPUs of floor(free / class milli); `small` is unused."""
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
        _, first = np.unique(key, return_index=True)  # the same options, in the same order, as FragCache
        first.sort()
        rows, gpus, a = rows[first], gpus[first], a[first]
        opt_nodes = nodes[rows]
        units = self.units[:, opt_nodes] - a[None, :] // ms + (a - m)[None, :] // ms
        total = self.total[opt_nodes] - m
        after = self.frag_of(units, None, total, cpu_after[rows], self.access[:, opt_nodes])
        return opt_nodes, gpus, after


class FabricPolicy(FGDPolicy):
    """Shares on the workload's share plan first; then FGD's integer score with a model-protection charge,
    the placeable measure, a used node."""

    name = "fabric"

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        super().__init__(workload)
        self._share: tuple[object, object, np.ndarray] | None = None
        self._pressure: tuple[object, object, np.ndarray] | None = None
        self._pc: PlaceableCache | None = None
        self._pc_models: object = None
        self._plan: SharePlan | None = None

    # The placeable measure scores a node by the copies of the target workload it could still take, which is
    # right while work only arrives (the inflation experiment). When work also leaves, it keeps nodes partly
    # filled and starves whole-node tasks: the trace replay turns it off (see sim/replay.py for the figures).
    # The share plan is an arrival-only rule too and follows the same switch.
    placeable_tiebreak = True
    # a planned pairing counts only where the node keeps the partner's CPU (see SharePlan.partner_cpu)
    partner_room = True

    def placeable_cache(self, state: ClusterState) -> PlaceableCache | None:
        if not self.placeable_tiebreak or self.workload is None or len(self.workload) == 0:
            return None
        if self._pc is None or self._pc_models is not state.models:
            self._pc_models = state.models
            self._pc = PlaceableCache(state, WorkloadArrays.build(self.workload, state.models))
        else:
            self._pc.sync(state)
        return self._pc

    def share_plan(self) -> SharePlan | None:
        """The workload's share plan (planned once), or None where the arrival-only rules are off."""
        if not self.placeable_tiebreak or self.workload is None or len(self.workload) == 0:
            return None
        if self._plan is None:
            self._plan = SharePlan.from_workload(self.workload)
        return self._plan if self._plan.follows else None

    def reserved_share(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: the share of the target workload's GPU demand (milli x count, per task) that
        only that model's nodes can serve: classes that some GPU model of the cluster cannot serve, split
        over the models they accept in proportion to those models' GPUs. 0 where nothing is constrained."""
        if self._share is not None and self._share[0] is state.models and self._share[1] is wl:
            return self._share[2]
        gpu_model = np.asarray([bool(m) for m in state.models])
        constrained = wl.is_gpu & (~wl.access[:, gpu_model]).any(axis=1)
        capacity = np.bincount(state.model_idx, weights=state.gpu_count, minlength=len(state.models))
        demand = wl.prob * wl.milli * wl.count
        total = float(demand.sum())
        cap_acc = wl.access * capacity[None, :]  # [K, M]
        split = cap_acc / np.maximum(cap_acc.sum(axis=1, keepdims=True), 1)
        share = np.zeros(len(state.models))
        if total > 0:
            share = ((demand * constrained)[:, None] * split).sum(axis=0) / total
        self._share = (state.models, wl, share)
        return share

    def load_factor(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: the constrained demand still to come if arrivals fill the cluster's free GPUs
        (free milli x reserved share) over the model's own free milli. Above 1: the model's constrained
        classes alone will not fit in what is left of it."""
        share = self.reserved_share(state, wl)
        free_m = np.bincount(state.model_idx, weights=state.gpu_free.sum(axis=1), minlength=len(state.models))
        return share * float(free_m.sum()) / np.maximum(free_m, 1.0)

    def protection_charge(self, state: ClusterState, wl: WorkloadArrays, pod: PodRequest, models: np.ndarray):
        """Milli-GPU charged to a placement on each model: the pod's GPU milli x min(1, load factor), the
        expected constrained demand it will displace. Zero for CPU-only pods."""
        if pod.gpu_count == 0:
            return np.zeros(len(models))
        return np.minimum(self.load_factor(state, wl), 1.0)[models] * pod.gpu_milli_total

    def model_pressure(self, state: ClusterState, wl: WorkloadArrays) -> np.ndarray:
        """Per model index: constrained GPU demand per GPU of the model, split equally over the models a
        class accepts (a report of how wanted a model is; placement uses `load_factor`)."""
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
        charge = self.protection_charge(state, cache.wl, pod, state.model_idx[opt_nodes])
        score = fgd_score(cache.frag[opt_nodes], after + charge)
        second = np.zeros(len(opt_nodes))
        pc = self.placeable_cache(state)
        if pc is not None:
            p_nodes, _, p_after = pc.options(state, pod, nodes)
            if not np.array_equal(p_nodes, opt_nodes):  # pragma: no cover - both enumerate the same options
                raise AssertionError("placeable options out of step with FGD's")
            second = p_after + charge - pc.frag[opt_nodes]
        in_use = (state.cpu_free[opt_nodes] < state.cpu_capacity[opt_nodes]) | (
            state.gpu_free[opt_nodes].sum(axis=1) < WHOLE_GPU_MILLI * state.gpu_count[opt_nodes]
        )
        keys = (~in_use, second, -score)
        plan = self.share_plan() if pod.is_share else None
        if plan is not None:
            used = WHOLE_GPU_MILLI - state.gpu_free[opt_nodes, gpus]
            follows = np.fromiter(
                (plan.follows_plan(u, pod.gpu_milli) for u in used), dtype=bool, count=len(used)
            )
            if self.partner_room:
                need = np.fromiter(
                    (plan.partner_cpu(u, pod.gpu_milli) for u in used), dtype=np.int64, count=len(used)
                )
                follows &= state.cpu_free[opt_nodes] - pod.cpu_milli >= need
            keys = (*keys, ~follows)
        # lexsort: last key is primary; options are in (node, gpu) order, so ties keep the smallest name
        best = int(np.lexsort(keys)[0])
        node = int(opt_nodes[best])
        if pod.is_share:
            return node, (int(gpus[best]),)
        if pod.gpu_count == 0:
            return node, ()
        return node, exclusive_gpus(state.gpu_free[node], pod.gpu_count)
