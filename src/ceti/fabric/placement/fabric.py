"""`fabric`: our placement policy: a share plan with reservations, FGD's score, GPU-model protection, a
CPU- and memory-aware tie-break.

Each way to place a task (node, and GPU for a share) is ranked by, in order:

0. Whether the placement keeps what the node reserves for the work its GPUs wait for. A GPU holding part
   of a planned pattern (`SharePlan`: the pairings a packing LP on the target workload's class mix uses,
   e.g. 650 + 320, 470 + 470, 810 alone or with 160) waits for the partner that completes it, and its node
   keeps that partner's CPU (the least a target class of its size asks) and memory (learnt from arrivals:
   the median of that class's pods, `ArrivalMemory`). Without it, whole-GPU and CPU-only tasks later take
   the CPU or memory beside a lone 470 or 650, and the rest of its GPU is stranded. For a GPU share the key
   is whether it follows the plan on that GPU (the GPU's used milli plus the share is part of a planned
   pattern) and keeps the reservations, its own GPU's included, and also leaves each idle GPU of the node
   the CPU that whole-GPU work asks per GPU (over the target workload's whole-GPU classes, one or more GPUs,
   by popularity: their CPU over their GPUs) and the memory of the one-GPU class asking the least CPU:
   completing a pattern on a node whose last cores its idle GPUs need strands them. FGD's measure is
   dominated by whole-GPU and CPU-only classes, so it pairs a 320 with a lone 470 (leaving 210 milli that
   only rare small shares fill) rather than open a GPU that a 650 would complete; the plan keeps such
   pairings for last. Enough nodes also keep room for the multi-GPU tasks still to come (learnt from
   arrivals, `keeps_multi_gpu`): too rare to be target classes, each needs that many idle GPUs on one node.
   Where no option keeps the key (or the size is not planned), the keys below decide alone. The partners'
   room gives way while the cluster is short of CPU (`_cpu_short`: less free CPU per free GPU milli than the
   target workload asks): then CPU runs out before the GPUs do, and the cores kept for a partner are cores
   the arrivals lack (on Alibaba's `cpu250` list it cost 56 GPUs; of the lists with published results, no
   other reaches that point). In that condition a CPU-only task keeps instead each idle GPU of its node a
   whole-GPU task's CPU and memory (`cpu_pod_room`), so the cores go where no idle GPU needs them.
1. FGD's integer score, floor(100 * sigmoid(-(dF + charge) / 1000)), where dF is the change in FGD's
   fragmentation measure and `charge` is a model-protection charge in the same unit (milli-GPU): the task's
   GPU milli times min(1, load factor of the node's GPU model). The load factor is the GPU demand of the
   target workload that only that model can serve (type-constrained classes, split over the models they
   accept by GPUs), scaled to the cluster's free GPUs, over the model's own free GPUs: the share of what is
   left of the model that constrained work will still want. A task that can go elsewhere pays for the
   constrained work it would displace; a task constrained to the model pays the same on all its options.
2. The change in the "placeable" measure (+ the same charge): per target class, idle GPU milli that cannot
   become copies of the class, copies limited by GPUs (sum of floor(free / milli) over GPUs, over the GPU
   count), by free CPU and by free memory (the class's memory learnt from arrivals). FGD asks only whether
   one copy fits, and not about memory, so CPU-only tasks and CPU- or memory-heavy tasks look free to it on
   nodes with little CPU or memory per GPU; this key sends them where CPU and memory are to spare.
3. A node already in use, keeping idle nodes whole; then the smallest name (lowest GPU index).

Key 0 and key 2 assume work only arrives (the inflation experiment); the trace replay, where work leaves,
turns both off (`placeable_tiebreak`), and with them the memory learning. Memory is not part of the target
workload's classes, so fabric learns it from the tasks it is asked to place (the median per class, re-read
when the number of arrivals doubles). An offline bound (`ceti sim bound`) showed how far placements were from
the best packing of the arrived pods, and which pairings the gap was made of.

Why (docs/sim-inflation.md): on the openb `gpuspec33` trace FGD lets unconstrained and CPU-only tasks use
up the CPU and GPUs of the scarce models (G3, P100, V100) and leaves G2 nodes idle while constrained tasks
fail; first-fit beats it by filling one node order, so constrained tasks, which arrive faster relative to
their model's size, fill their models ahead of the unconstrained front. Both keys are learnt from the
trace's class distribution only, the same code and constants for every trace.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ceti.fabric.placement.fgd import FGDPolicy, FragCache, fgd_score
from ceti.fabric.placement.policies import Placement
from ceti.fabric.placement.state import WHOLE_GPU_MILLI, ClusterState, PodRequest, exclusive_gpus
from ceti.fabric.placement.workload import (
    ArrivalMemory,
    ArrivalMultiGpu,
    SharePlan,
    TargetWorkload,
    WorkloadArrays,
)


class PlaceableCache(FragCache):
    """A CPU- and memory-aware fragmentation measure: per class, the idle GPU milli a node cannot turn into
    copies of that class. Copies are limited by GPUs (sum over GPUs of floor(free / milli), divided by the
    class's GPU count), by free CPU (floor(free CPU / class CPU)) and by free memory (floor(free memory /
    class memory), where `memory` gives the class's memory; 0 = not known, no limit); what they do not use is
    fragmented. A class that cannot run on the node's model, and a CPU-only class, count every idle GPU, as in
    FGD."""

    memory: np.ndarray | None = None  # [K] memory MiB per class, learnt from arrivals (ArrivalMemory)

    def recompute(self, state: ClusterState) -> None:
        self.version = state.version
        gpu = state.gpu_free
        self.milli_safe = np.maximum(self.wl.milli, 1)
        self.units = (gpu[None, :, :] // self.milli_safe[:, None, None]).sum(axis=2)  # [K, N]
        self.total = gpu.sum(axis=1)
        self.access = self.wl.access[:, state.model_idx]
        self.signature = np.asarray([self._signature(state, i) for i in range(state.size)], dtype=np.int64)
        self.frag = self.frag_of(self.units, None, self.total, state.cpu_free, self.access, state.memory_free)

    def update_node(self, state: ClusterState, node: int) -> None:
        self.signature[node] = self._signature(state, node)
        row = state.gpu_free[node]
        self.units[:, node] = (row[None, :] // self.milli_safe[:, None]).sum(axis=1)
        self.total[node] = row.sum()
        one = slice(node, node + 1)
        self.frag[node] = self.frag_of(
            self.units[:, one],
            None,
            self.total[one],
            state.cpu_free[one],
            self.access[:, one],
            state.memory_free[one],
        )[0]
        self.version = state.version

    def frag_of(self, units, small, total, cpu, access, memory=None):  # type: ignore[override]
        """`units` [K, C]: per class, sum over the GPUs of floor(free / class milli); `small` is unused;
        `memory` [C] free memory (None: not limited)."""
        wl = self.wl
        by_cpu = np.where(wl.cpu[:, None] > 0, cpu[None, :] // np.maximum(wl.cpu[:, None], 1), 1 << 40)
        if self.memory is not None and memory is not None:
            need = self.memory[:, None]
            by_cpu = np.minimum(by_cpu, np.where(need > 0, memory[None, :] // np.maximum(need, 1), 1 << 40))
        copies = np.minimum(units // np.maximum(wl.count[:, None], 1), by_cpu)
        usable = np.minimum(copies * (wl.milli * wl.count)[:, None], total[None, :])
        fits = access & wl.is_gpu[:, None]
        return wl.prob @ np.where(fits, total[None, :] - usable, total[None, :])

    def options(self, state: ClusterState, pod: PodRequest, nodes: np.ndarray):  # type: ignore[override]
        cpu_after = state.cpu_free[nodes] - pod.cpu_milli
        mem_after = state.memory_free[nodes] - pod.memory_mib
        ms = self.milli_safe[:, None]
        if not pod.is_share:
            units = self.units[:, nodes]
            if pod.gpu_milli > 0:
                lost = WHOLE_GPU_MILLI // ms - (WHOLE_GPU_MILLI - pod.gpu_milli) // ms
                units = units - pod.gpu_count * lost
            total = self.total[nodes] - pod.gpu_milli_total
            after = self.frag_of(units, None, total, cpu_after, self.access[:, nodes], mem_after)
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
        after = self.frag_of(units, None, total, cpu_after[rows], self.access[:, opt_nodes], mem_after[rows])
        return opt_nodes, gpus, after


class MemoryAwareFragCache(FragCache):
    """FGD's per-node terms, with free memory in the signature by which nodes count as the same: fabric's
    reservations and placeable measure read memory, so two nodes that differ only in free memory are
    different options."""

    @staticmethod
    def _signature(state: ClusterState, node: int) -> int:
        return hash((FragCache._signature(state, node), int(state.memory_free[node])))


class Reservations(NamedTuple):
    """What a node keeps for the work its GPUs wait for (`FabricPolicy.reservations`)."""

    cpu: np.ndarray  # [1001] by a GPU's used milli: CPU milli of the planned partner it waits for
    memory: np.ndarray  # [1001] the same in memory MiB
    idle_cpu: int  # per idle GPU: the CPU whole-GPU work asks per GPU, by popularity
    idle_memory: int  # the learnt memory of the one-GPU whole-GPU class asking the least CPU

    def idle_room(self, cpu_left: np.ndarray, mem_left: np.ndarray, idle: np.ndarray) -> np.ndarray:
        """Whether what a node has left still gives each of its `idle` GPUs a whole-GPU task's CPU and memory."""
        return (cpu_left >= idle * self.idle_cpu) & (mem_left >= idle * self.idle_memory)


def whole_gpu_cpu_per_gpu(workload: TargetWorkload) -> int:
    """The CPU milli that the target workload's whole-GPU work asks per GPU: over its classes of one or more
    whole GPUs, popularity x CPU over popularity x GPUs (0 without such classes). The least any one-GPU class
    asks (3.2 cores on `default`) left an idle GPU's task without the cores it needs on nodes whose shares
    took the rest; the most popular one-GPU class's (11.4) also ignored that multi-GPU tasks ask less per GPU,
    and kept shares off busy nodes on `multigpu50` (docs/sim-inflation.md)."""
    cpu = gpus = 0.0
    for c, p in zip(workload.classes, workload.probability, strict=True):
        if c.gpu_count >= 1 and c.gpu_milli == WHOLE_GPU_MILLI:
            cpu += p * c.cpu_milli
            gpus += p * c.gpu_count
    return int(cpu / gpus) if gpus else 0


class FabricPolicy(FGDPolicy):
    """Placements that keep the nodes' reservations first (for a share: on the workload's share plan too);
    then FGD's integer score with a model-protection charge, the placeable measure, a used node."""

    name = "fabric"

    def __init__(self, workload: TargetWorkload | None = None) -> None:
        super().__init__(workload)
        self._share: tuple[object, object, np.ndarray] | None = None
        self._pressure: tuple[object, object, np.ndarray] | None = None
        self._pc: PlaceableCache | None = None
        self._pc_models: object = None
        self._plan: SharePlan | None = None
        self._memory = ArrivalMemory()
        self._reserved: Reservations | None = None
        self._multi = ArrivalMultiGpu()
        # CPU milli the target workload asks per GPU milli, with the workload it was read from
        self._cpu_need: tuple[TargetWorkload, float] | None = None

    # The placeable measure scores a node by the copies of the target workload it could still take, which is
    # right while work only arrives (the inflation experiment). When work also leaves, it keeps nodes partly
    # filled and starves whole-node tasks: the trace replay turns it off (see sim/replay.py for the figures).
    # The share plan is an arrival-only rule too and follows the same switch.
    placeable_tiebreak = True
    # a GPU waiting for a planned partner keeps the partner's CPU and memory on its node (see `reservations`)
    partner_room = True
    # enough nodes keep the idle GPUs, CPU and memory of the multi-GPU tasks still to come (`keeps_multi_gpu`)
    multi_gpu_room = True
    # while CPU is short (`_cpu_short`), a CPU-only pod leaves each idle GPU of its node a whole-GPU task's CPU
    cpu_pod_room = True

    def _cpu_short(self, state: ClusterState) -> bool:
        """Whether the cluster's free CPU per free GPU milli is below what the target workload asks per GPU milli:
        CPU, not GPUs, runs out first, and CPU a node keeps for a share's partner is CPU the arrivals lack."""
        wl = self.workload
        if wl is None or len(wl) == 0:
            return False
        if self._cpu_need is None or self._cpu_need[0] is not wl:
            p = np.asarray(wl.probability, np.float64)
            cpu = np.asarray([c.cpu_milli for c in wl.classes], np.float64)
            gpu = np.asarray([c.gpu_milli * c.gpu_count for c in wl.classes], np.float64)
            self._cpu_need = (wl, float((p * cpu).sum() / max((p * gpu).sum(), 1e-9)))
        gpu_free = float(np.clip(state.gpu_free, 0, None).sum())
        return float(state.cpu_free.sum()) < self._cpu_need[1] * gpu_free

    def cache_type(self) -> type[FragCache]:
        """Where the arrival-only rules (which read memory) are on, nodes are told apart by free memory too."""
        return MemoryAwareFragCache if self.placeable_tiebreak else FragCache

    def placeable_cache(self, state: ClusterState, relearn: bool = False) -> PlaceableCache | None:
        """The placeable measure's cache; `relearn`: re-read the learnt class memory (and recompute)."""
        if not self.placeable_tiebreak or self.workload is None or len(self.workload) == 0:
            return None
        if self._pc is None or self._pc_models is not state.models:
            self._pc_models = state.models
            self._pc = PlaceableCache(state, WorkloadArrays.build(self.workload, state.models))
            relearn = True
        if relearn:
            self._pc.memory = self._memory.of_classes(self.workload)
            self._pc.state = state
            self._pc.recompute(state)
        else:
            self._pc.sync(state)
        return self._pc

    def reservations(self, plan: SharePlan, relearn: bool = False) -> Reservations:
        """What a node keeps for the work its GPUs wait for. A GPU holding part of a planned pattern waits for
        the partner that completes it (`SharePlan.open_partner`): that partner's CPU (the least a target class
        of its size asks) and memory (learnt from arrivals: the median of that class's pods). An idle GPU waits
        for whole-GPU work: the CPU it asks per GPU (`whole_gpu_cpu_per_gpu`), and the memory of the one-GPU
        class that asks the least CPU."""
        if self._reserved is None or relearn:
            cpu = plan.share_cpu
            memory = {size: self._memory.median(c, size, 1) for size, c in cpu.items()}
            classes = self.workload.classes if self.workload is not None else ()
            whole = [c for c in classes if c.gpu_count == 1 and c.gpu_milli == WHOLE_GPU_MILLI]
            least = min(whole, key=lambda c: c.cpu_milli, default=None)
            self._reserved = Reservations(
                plan.reserved(cpu),
                plan.reserved(memory),
                whole_gpu_cpu_per_gpu(self.workload) if self.workload is not None else 0,
                0 if least is None else self._memory.median(least.cpu_milli, WHOLE_GPU_MILLI, 1),
            )
        return self._reserved

    def keeps_multi_gpu(
        self, state: ClusterState, pod: PodRequest, opt_nodes: np.ndarray, gpus: np.ndarray
    ) -> np.ndarray:
        """Per option: whether the cluster still has room, after it, for the tasks of two or more whole GPUs
        expected among the arrivals to come. Per GPU count k seen so far (`ArrivalMultiGpu`), the room is the
        copies of the median k-GPU task the nodes can take (idle GPUs over k, free CPU and memory over its
        median ask), and the expected number is their share of the arrived GPU demand times the free GPU milli
        (arrivals filling the cluster, as the load factor assumes), over k GPUs. An option that takes a copy
        while there are no more copies than that keeps nothing. Each such task needs that many idle GPUs on one
        node, and late arrivals of one GPU or less use them up: on `default` (seed 42) 12 multi-GPU tasks failed
        from 80% arrived on (2 with the room), and the one-GPU and share work that took their place leaves
        holes a whole-GPU task would not."""
        ok = np.ones(len(opt_nodes), dtype=bool)
        asks = self._multi.asks()
        if not asks:
            return ok
        free_milli = float(state.gpu_free.sum())
        idle = (state.gpu_free == WHOLE_GPU_MILLI).sum(axis=1)
        idle_after = idle[opt_nodes].copy()
        if pod.is_share:
            idle_after -= state.gpu_free[opt_nodes, gpus] == WHOLE_GPU_MILLI
        else:
            idle_after -= pod.gpu_count
        cpu_after = state.cpu_free[opt_nodes] - pod.cpu_milli
        mem_after = state.memory_free[opt_nodes] - pod.memory_mib
        for k, ask in asks.items():
            if pod.gpu_count == k and not pod.is_share:
                continue  # the work the room is kept for
            cpu, mem = max(ask.cpu_milli, 1), max(ask.memory_mib, 1)
            copies = np.minimum(np.minimum(idle // k, state.cpu_free // cpu), state.memory_free // mem)
            expected = ask.demand_share * free_milli / (k * WHOLE_GPU_MILLI)
            after = np.minimum(np.minimum(idle_after // k, cpu_after // cpu), mem_after // mem)
            lost = copies[opt_nodes] - np.maximum(after, 0)
            ok &= (lost <= 0) | (int(copies.sum()) - lost >= expected)
        return ok

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

    def place(
        self,
        state: ClusterState,
        pod: PodRequest,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
        prefer: np.ndarray | None = None,
    ) -> Placement | None:
        relearn = False
        if self.placeable_tiebreak:  # arrivals only: learn what they ask of memory
            relearn = self._memory.observe(pod.cpu_milli, pod.gpu_milli, pod.gpu_count, pod.memory_mib)
            self._multi.observe(pod.cpu_milli, pod.memory_mib, pod.gpu_milli, pod.gpu_count)
        nodes = np.flatnonzero(self.filter(state, pod, allowed))
        if len(nodes) == 0:
            return None
        cache = self.cache(state, pod)
        nodes = cache.distinct(nodes, prefer)
        opt_nodes, gpus, after = cache.options(state, pod, nodes)
        charge = self.protection_charge(state, cache.wl, pod, state.model_idx[opt_nodes])
        score = fgd_score(cache.frag[opt_nodes], after + charge)
        second = np.zeros(len(opt_nodes))
        pc = self.placeable_cache(state, relearn)
        if pc is not None:
            p_nodes, _, p_after = pc.options(state, pod, nodes)
            if not np.array_equal(p_nodes, opt_nodes):  # pragma: no cover - both enumerate the same options
                raise AssertionError("placeable options out of step with FGD's")
            second = p_after + charge - pc.frag[opt_nodes]
        in_use = (state.cpu_free[opt_nodes] < state.cpu_capacity[opt_nodes]) | (
            state.gpu_free[opt_nodes].sum(axis=1) < WHOLE_GPU_MILLI * state.gpu_count[opt_nodes]
        )
        keys = (~in_use, second, -score)
        if prefer is not None:  # the caller's preference (lower first), after every key of the policy's own
            keys = (prefer[opt_nodes], *keys)
        plan = self.share_plan()
        short = plan is not None and self._cpu_short(state)
        if plan is not None and self.partner_room and not short:
            # what the node keeps after this placement for the partners its GPUs wait for
            res = self.reservations(plan, relearn)
            free = state.gpu_free[opt_nodes].copy()
            if pod.is_share:
                free[np.arange(len(opt_nodes)), gpus] -= pod.gpu_milli
            used = np.clip(WHOLE_GPU_MILLI - free, 0, WHOLE_GPU_MILLI)  # missing slots hold 0 free: "full"
            cpu_kept = state.cpu_free[opt_nodes] - pod.cpu_milli - res.cpu[used].sum(axis=1)
            mem_kept = state.memory_free[opt_nodes] - pod.memory_mib - res.memory[used].sum(axis=1)
            keeps = (cpu_kept >= 0) & (mem_kept >= 0)
            if pod.is_share:
                # a share on plan also leaves the node's idle GPUs the room of a whole-GPU task each
                idle = (free == WHOLE_GPU_MILLI).sum(axis=1)
                keeps &= res.idle_room(cpu_kept, mem_kept, idle)
        else:
            keeps = np.ones(len(opt_nodes), dtype=bool)
        if short and pod.gpu_count == 0 and self.cpu_pod_room:
            # CPU runs out before the GPUs: a CPU-only pod takes it where no idle GPU needs it
            keeps &= self.reservations(plan, relearn).idle_room(
                state.cpu_free[opt_nodes] - pod.cpu_milli,
                state.memory_free[opt_nodes] - pod.memory_mib,
                (state.gpu_free[opt_nodes] == WHOLE_GPU_MILLI).sum(axis=1),
            )
        if self.placeable_tiebreak and self.multi_gpu_room:
            keeps &= self.keeps_multi_gpu(state, pod, opt_nodes, gpus)
        if plan is not None and pod.is_share:
            used_before = WHOLE_GPU_MILLI - state.gpu_free[opt_nodes, gpus]
            follows = np.fromiter(
                (plan.follows_plan(u, pod.gpu_milli) for u in used_before), dtype=bool, count=len(used_before)
            )
            keys = (*keys, ~(follows & keeps))
        else:
            keys = (*keys, ~keeps)
        # lexsort: last key is primary; options are in (node, gpu) order, so ties keep the smallest name
        best = int(np.lexsort(keys)[0])
        node = int(opt_nodes[best])
        if pod.is_share:
            return node, (int(gpus[best]),)
        if pod.gpu_count == 0:
            return node, ()
        return node, exclusive_gpus(state.gpu_free[node], pod.gpu_count)
