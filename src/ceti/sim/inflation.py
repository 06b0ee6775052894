"""The FGD paper's workload-inflation experiment.

Every pod of a trace arrives once, in shuffled order; random copies of trace pods follow until the
requested GPUs reach `inflation` (130%) of the cluster's GPU capacity (a trace above that has pods removed
at random). Pods arrive one at a time and never leave; a pod that fits nowhere is not placed but still
counts as arrived. After every arrival the allocated GPU milli is recorded; the headline number is the
unallocated GPUs when the arrived GPU requests equal 100% of capacity, read as the Go analysis does: the
mean allocation over the arrivals whose arrived share rounds to 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ceti.fabric import WHOLE_GPU_MILLI, Allocation, Demand, Job, Node, Snapshot, schedule, shared_gpus
from ceti.fabric.per_task import DEFAULT_PLACEMENT, ArrivalWindow
from ceti.fabric.placement.registry import make_policy
from ceti.fabric.placement.state import ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload
from ceti.sim.trace import TraceNode, TracePod


def cluster_from_nodes(nodes: Sequence[TraceNode]) -> ClusterState:
    return ClusterState.build(
        names=[n.name for n in nodes],
        cpu_milli=[n.cpu_milli for n in nodes],
        memory_mib=[n.memory_mib for n in nodes],
        gpu_models=[n.gpu_model for n in nodes],
        gpu_free_milli=[[1000] * n.gpu_count for n in nodes],
    )


def renamed_cluster(cluster: ClusterState, seed: int) -> ClusterState:
    """The cluster as one run of the Go simulator names it: `syncClusterResourceList` prefixes the i-th node
    (in name order) with "%04d-" of the i-th entry of a random permutation before creating it, so "the
    smallest name" of `selectHost`'s tie-break is a random node order, fixed for the run and new per seed.
    Policies that give many nodes one score (gpu-packing and gpu-clustering for CPU-only tasks) fill the
    cluster in that order, not in trace-name order."""
    prefix = np.random.default_rng([seed, 11]).permutation(cluster.size)
    return ClusterState.build(
        names=[f"{int(p):04d}-{name}" for p, name in zip(prefix, cluster.names, strict=True)],
        cpu_milli=cluster.cpu_capacity.tolist(),
        memory_mib=cluster.memory_capacity.tolist(),
        gpu_models=[cluster.models[int(m)] for m in cluster.model_idx],
        gpu_free_milli=[[1000] * int(c) for c in cluster.gpu_count],
        models=cluster.models,  # the same model index, so the requests' model masks still apply
    )


def target_workload(pods: Sequence[TracePod], coverage: float = 0.95) -> TargetWorkload:
    return TargetWorkload.from_tasks(
        ((p.cpu_milli, p.gpu_milli, p.gpu_count, p.gpu_spec) for p in pods), coverage
    )


def pod_requests(state: ClusterState, pods: Sequence[TracePod]) -> list[PodRequest]:
    masks: dict[frozenset[str], np.ndarray] = {}
    out = []
    for p in pods:
        mask = None
        if p.gpu_count and p.gpu_models:
            mask = masks.get(p.gpu_models)
            if mask is None:
                mask = masks[p.gpu_models] = state.model_mask(p.gpu_models)
        out.append(PodRequest(p.cpu_milli, p.memory_mib, p.gpu_count, p.gpu_milli, mask))
    return out


def arrival_order(
    n_pods: int, gpu_milli: np.ndarray, capacity_milli: int, inflation: float, seed: int
) -> list[int]:
    """Indices into the trace: a shuffle of all pods, then random copies up to `inflation` x capacity."""
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(n_pods)]
    target = inflation * capacity_milli
    requested = int(gpu_milli.sum())
    if requested > target:
        while requested > target and order:
            requested -= int(gpu_milli[order.pop(int(rng.integers(len(order))))])
        return order
    while True:
        i = int(rng.integers(n_pods))
        if requested + int(gpu_milli[i]) > target:
            break
        requested += int(gpu_milli[i])
        order.append(i)
    return order


GAP_STEP_MILLI = 10  # a partly used GPU's free milli, to this step, in the breakdown


def pod_shape(pod: PodRequest) -> str:
    """A pod's shape as the breakdown groups failures: "CPU only", "share", "1 GPU", "8 GPUs", ..."""
    if pod.gpu_count == 0:
        return "CPU only"
    if pod.is_share:
        return "share"
    return f"{pod.gpu_count} GPU" + ("s" if pod.gpu_count > 1 else "")


@dataclass(slots=True)
class Breakdown:
    """Where a run's unallocated GPUs are when arrivals first reach the cluster's capacity: the pods that
    failed by then (their GPUs are the unallocated GPUs: every arrival was a request), and the free room they
    left, as idle GPUs and as the free milli of partly used GPUs."""

    unallocated_gpus: float
    failed: dict[str, tuple[int, float]]  # pod shape -> (pods, GPUs they asked for)
    idle_gpus: int  # GPUs nothing uses
    gaps: dict[int, float]  # a partly used GPU's free milli (to GAP_STEP_MILLI) -> GPUs of such room

    @classmethod
    def read(cls, state: ClusterState, failed: dict[str, tuple[int, float]]) -> Breakdown:
        valid = np.arange(state.gpu_free.shape[1])[None, :] < state.gpu_count[:, None]
        free = state.gpu_free[valid]
        partial = free[(free > 0) & (free < WHOLE_GPU_MILLI)]
        steps = partial // GAP_STEP_MILLI * GAP_STEP_MILLI
        sizes, first = np.unique(steps, return_inverse=True)
        sums = np.bincount(first.reshape(-1), weights=partial, minlength=len(sizes))
        return cls(
            unallocated_gpus=float(np.clip(free, 0, None).sum()) / WHOLE_GPU_MILLI,
            failed=dict(failed),
            idle_gpus=int((free >= WHOLE_GPU_MILLI).sum()),
            gaps={
                int(k): float(v) / WHOLE_GPU_MILLI for k, v in zip(sizes.tolist(), sums.tolist(), strict=True)
            },
        )


def reading_band(
    arrived_milli: np.ndarray, total_gpus: int, percent: float, *, fallback: bool = True
) -> np.ndarray:
    """Which arrivals the reading at `percent` averages over: those whose arrived share rounds to it, or, when
    none does (and `fallback`), those within a point of it."""
    arrived = np.round(arrived_milli / (total_gpus * 1000) * 100)
    sel = arrived == percent
    if fallback and not sel.any():
        sel = (arrived >= percent - 1) & (arrived <= percent + 1)
    return sel


@dataclass(slots=True)
class RunResult:
    policy: str
    seed: int
    total_gpus: int
    arrived_milli: np.ndarray  # after each arrival
    used_milli: np.ndarray  # after each arrival
    placed: int
    failed: int
    breakdown: Breakdown | None = None  # at the first arrival that brings arrivals to capacity

    def alloc_ratio_at(self, percent: float) -> float:
        """Mean allocated share (%) over arrivals whose arrived share rounds to `percent`, as the Go analysis."""
        cap = self.total_gpus * 1000
        alloc = np.round(self.used_milli / cap * 100, 2)
        sel = reading_band(self.arrived_milli, self.total_gpus, percent)
        if not sel.any():
            return float("nan")
        return float(np.round(alloc[sel].mean(), 2))

    def unallocated_gpus_at(self, percent: float = 100) -> float:
        return self.total_gpus * (1 - self.alloc_ratio_at(percent) / 100)


@dataclass(slots=True)
class InflationSetup:
    cluster: ClusterState
    pods: list[TracePod]
    requests: list[PodRequest]
    workload: TargetWorkload
    gpu_milli: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def build(cls, nodes: Sequence[TraceNode], pods: Sequence[TracePod]) -> InflationSetup:
        cluster = cluster_from_nodes(nodes)
        pod_list = list(pods)
        return cls(
            cluster=cluster,
            pods=pod_list,
            requests=pod_requests(cluster, pod_list),
            workload=target_workload(pod_list),
            gpu_milli=np.asarray([p.gpu_milli_total for p in pod_list], dtype=np.int64),
        )


LIVE = "live"
LIVE_BATCH = 16  # arrivals per live round: gpudefrag's batch, and a few seconds of a busy cluster's arrivals


def live_placement(name: str) -> str | None:
    """The placement of a live-round entry ("live" = the server's default, "live:NAME"), else None."""
    if name == LIVE:
        return DEFAULT_PLACEMENT
    if name.startswith(LIVE + ":"):
        return name.split(":", 1)[1]
    return None


def run_inflation(
    setup: InflationSetup,
    policy_name: str,
    seed: int,
    *,
    inflation: float = 1.3,
    stop_at_percent: float | None = None,
    batch: int = LIVE_BATCH,
) -> RunResult:
    """One seed of one policy. `stop_at_percent` ends the run once arrivals pass that share of capacity.

    A live entry (`live_placement`) runs the live scheduling round instead of a placement policy."""
    placement = live_placement(policy_name)
    if placement is not None:
        return run_live(
            setup,
            policy_name,
            placement,
            seed,
            batch=batch,
            inflation=inflation,
            stop_at_percent=stop_at_percent,
        )
    state = renamed_cluster(setup.cluster, seed)
    capacity = state.total_gpu_milli()
    order = arrival_order(len(setup.pods), setup.gpu_milli, capacity, inflation, seed)
    policy = make_policy(policy_name, setup.workload)
    rng = np.random.default_rng([seed, 7])
    arrived = np.zeros(len(order), dtype=np.int64)
    used = np.zeros(len(order), dtype=np.int64)
    arrived_milli = used_milli = placed = failed = 0
    stop = None if stop_at_percent is None else stop_at_percent / 100 * capacity
    failed_by_shape: dict[str, tuple[int, float]] = {}
    breakdown: Breakdown | None = None
    n = 0
    for i in order:
        pod = setup.requests[i]
        arrived_milli += pod.gpu_milli_total
        choice = policy.place(state, pod, rng)
        if choice is None:
            failed += 1
            if breakdown is None:
                shape = pod_shape(pod)
                pods, gpus = failed_by_shape.get(shape, (0, 0.0))
                failed_by_shape[shape] = (pods + 1, gpus + pod.gpu_milli_total / WHOLE_GPU_MILLI)
        else:
            state.allocate(choice[0], pod, choice[1])
            used_milli += pod.gpu_milli_total
            placed += 1
        arrived[n] = arrived_milli
        used[n] = used_milli
        n += 1
        if breakdown is None and arrived_milli >= capacity:
            breakdown = Breakdown.read(state, failed_by_shape)
        if stop is not None and arrived_milli > stop:
            break
    return RunResult(
        policy_name, seed, int(state.gpu_count.sum()), arrived[:n], used[:n], placed, failed, breakdown
    )


def run_live(
    setup: InflationSetup,
    name: str,
    placement: str,
    seed: int,
    *,
    batch: int = LIVE_BATCH,
    inflation: float = 1.3,
    stop_at_percent: float | None = None,
) -> RunResult:
    """The same arrivals through the live scheduling round (`fabric.schedule`, as the server calls it): every
    `batch` arrivals are one round's pending jobs, on the nodes with what earlier rounds placed running. A pod
    its round does not start fails, as a pod that fits nowhere does for the policies (no queue, no retries);
    all pods are of one priority and none is interruptible, so nothing is pre-empted. The nodes are named as
    for the policies (`renamed_cluster`), so the round's ties by node id fall the same way."""
    state = renamed_cluster(setup.cluster, seed)
    nodes = fabric_nodes(state)
    row = {n: i for i, n in enumerate(state.names)}
    capacity = state.total_gpu_milli()
    order = arrival_order(len(setup.pods), setup.gpu_milli, capacity, inflation, seed)
    stop = None if stop_at_percent is None else stop_at_percent / 100 * capacity
    running: list[Allocation] = []
    recent = ArrivalWindow()  # as the server reads them (Snapshot.arrivals)
    arrived: list[int] = []
    used: list[int] = []
    arrived_milli = used_milli = failed = 0
    for b in range(0, len(order), max(1, batch)):
        ids = order[b : b + max(1, batch)]
        jobs = tuple(Job(f"pod-{b + k}", pod_demand(setup.pods[i]), b + k) for k, i in enumerate(ids))
        for j in jobs:
            recent.add(j.demand)
        snap = Snapshot(nodes, tuple(running), jobs, arrivals=recent.arrivals())
        starts = {s.job_id: s for s in schedule(snap, placement).starts}
        for job, i in zip(jobs, ids, strict=True):
            pod = setup.requests[i]
            arrived_milli += pod.gpu_milli_total
            s = starts.get(job.id)
            if s is None:
                failed += 1
            else:
                state.allocate(row[s.node_id], pod, s.gpu_indices)
                used_milli += pod.gpu_milli_total
                d = job.demand
                running.append(
                    Allocation(
                        s.job_id,
                        s.job_id,
                        s.node_id,
                        d.cpu_milli,
                        d.memory_mib,
                        s.gpu_indices,
                        d.gpu_share_milli,
                        gpu_models=d.gpu_models,
                    )
                )
            arrived.append(arrived_milli)
            used.append(used_milli)
        if stop is not None and arrived_milli > stop:
            break
    return RunResult(
        name,
        seed,
        int(state.gpu_count.sum()),
        np.asarray(arrived, dtype=np.int64),
        np.asarray(used, dtype=np.int64),
        len(running),
        failed,
    )


def fabric_nodes(state: ClusterState) -> tuple[Node, ...]:
    """The cluster's nodes as the scheduling round sees them (GPU indices = the state's GPU slots)."""
    return tuple(
        Node(name, int(cpu), int(mem), shared_gpus((g, state.models[int(m)], 0) for g in range(int(count))))
        for name, cpu, mem, count, m in zip(
            state.names,
            state.cpu_capacity,
            state.memory_capacity,
            state.gpu_count,
            state.model_idx,
            strict=True,
        )
    )


def pod_demand(p: TracePod) -> Demand:
    """A trace pod as the scheduling round's `Demand` (a share is one GPU, less than whole)."""
    share = p.gpu_milli if p.gpu_count == 1 and 0 < p.gpu_milli < 1000 else 0
    return Demand(p.cpu_milli, p.memory_mib, p.gpu_count, share, p.gpu_models if p.gpu_count else frozenset())


@dataclass(slots=True)
class PolicySummary:
    policy: str
    runs: list[RunResult]

    def _values(self, percent: float) -> np.ndarray:
        return np.asarray([r.unallocated_gpus_at(percent) for r in self.runs], dtype=np.float64)

    def unallocated_gpus(self, percent: float = 100) -> tuple[float, float]:
        """Mean and sample standard deviation over seeds."""
        v = self._values(percent)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    def allocation_ratio(self, percent: float = 100) -> float:
        """Mean allocated share of GPU capacity (0-1) at `percent` arrived."""
        return float(np.mean([r.alloc_ratio_at(percent) for r in self.runs]) / 100)

    def curve(self, percents: Sequence[int]) -> np.ndarray:
        """Mean allocated share (%) at each arrived share (%), NaN where no run reached it."""
        out = []
        for p in percents:
            vals = [r.alloc_ratio_at(p) for r in self.runs]
            vals = [v for v in vals if not np.isnan(v)]
            out.append(np.mean(vals) if vals else np.nan)
        return np.asarray(out)

    def breakdown(self, top_gaps: int = 5) -> dict[str, object] | None:
        """The runs' `Breakdown`s, means over seeds: the pods that failed by shape (pods, GPUs), idle GPUs, and
        the partly used GPUs' free room by size (the `top_gaps` largest in GPUs, the rest together). None where
        no run reached capacity (live entries, or a run stopped before)."""
        got = [r.breakdown for r in self.runs if r.breakdown is not None]
        if not got:
            return None
        n = len(got)
        shapes = sorted({k for b in got for k in b.failed}, key=_shape_order)
        failed = {
            k: {
                "pods": round(sum(b.failed.get(k, (0, 0.0))[0] for b in got) / n, 1),
                "gpus": round(sum(b.failed.get(k, (0, 0.0))[1] for b in got) / n, 1),
            }
            for k in shapes
        }
        gaps: dict[int, float] = {}
        for b in got:
            for size, v in b.gaps.items():
                gaps[size] = gaps.get(size, 0.0) + v / n
        ranked = sorted(gaps.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "seeds": len(got),
            "unallocated_gpus": round(sum(b.unallocated_gpus for b in got) / n, 1),
            "idle_gpus": round(sum(b.idle_gpus for b in got) / n, 1),
            "gaps_gpus_by_free_milli": {str(k): round(v, 1) for k, v in ranked[:top_gaps]},
            "gaps_gpus_other": round(sum(v for _, v in ranked[top_gaps:]), 1),
            "failed_by_shape": failed,
        }

    def as_json(self) -> dict[str, object]:
        mean, std = self.unallocated_gpus(100)
        return {
            "unallocated_gpus_at_100": round(mean, 2),
            "unallocated_gpus_at_100_std": round(std, 2),
            "allocation_ratio_at_100": round(self.allocation_ratio(100), 4),
            "seeds": [r.seed for r in self.runs],
            "unallocated_gpus_at_100_per_seed": [round(r.unallocated_gpus_at(100), 2) for r in self.runs],
            "failed_pods_mean": float(np.mean([r.failed for r in self.runs])),
            "total_gpus": self.runs[0].total_gpus if self.runs else 0,
            "breakdown_at_capacity": self.breakdown(),
        }


def _shape_order(shape: str) -> tuple[int, int]:
    """CPU only, shares, then whole GPUs by count."""
    if shape == "CPU only":
        return (0, 0)
    if shape == "share":
        return (1, 0)
    return (2, int(shape.split()[0]))


_WORKER_SETUP: InflationSetup | None = None


def _init_worker(setup: InflationSetup) -> None:
    global _WORKER_SETUP
    _WORKER_SETUP = setup


def _run_task(task: tuple[str, int, float, float | None, int]) -> RunResult:
    assert _WORKER_SETUP is not None
    policy, seed, inflation, stop, batch = task
    return run_inflation(_WORKER_SETUP, policy, seed, inflation=inflation, stop_at_percent=stop, batch=batch)


def run_experiment(
    setup: InflationSetup,
    policies: Sequence[str],
    seeds: Sequence[int],
    *,
    inflation: float = 1.3,
    stop_at_percent: float | None = None,
    processes: int = 1,
    on_result=None,  # called with each RunResult as it finishes (progress bars)
    batch: int = LIVE_BATCH,
) -> dict[str, PolicySummary]:
    """Every policy x seed; runs in `processes` worker processes when more than one. `batch`: arrivals per
    round of the live entries."""
    tasks = [(p, s, inflation, stop_at_percent, batch) for p in policies for s in seeds]
    results: list[RunResult] = []
    if processes > 1 and len(tasks) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(processes, initializer=_init_worker, initargs=(setup,)) as pool:
            for r in pool.imap_unordered(_run_task, tasks):
                results.append(r)
                if on_result:
                    on_result(r)
    else:
        for policy, seed, infl, stop, size in tasks:
            r = run_inflation(setup, policy, seed, inflation=infl, stop_at_percent=stop, batch=size)
            results.append(r)
            if on_result:
                on_result(r)
    out: dict[str, PolicySummary] = {}
    for p in policies:
        runs = sorted((r for r in results if r.policy == p), key=lambda r: r.seed)
        out[p] = PolicySummary(p, runs)
    return out
