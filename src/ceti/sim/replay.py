"""Trace replay: real arrival and run times, with departures, through the same placement policies.

Pods arrive at their trace `creation_time` and run for their trace run time (deletion minus scheduled time, or
minus creation time when the trace never scheduled them). A pod that fits nowhere waits in the queue and is
tried again whenever something changes. The trace's own cluster was far from full (the default pod list never
holds more than about 66 GPUs at once on its 6,212), so `load` compresses arrival times until the peak GPU
demand (had every pod started on arrival) is that share of the cluster's GPUs; run times are never changed.

Queue discipline is part of a scheduler, so it is part of the policy here:
- the baselines use the queue of the simulator they come from: first come, first tried, no pre-emption;
- `fabric` tries pods by QoS class first (Guaranteed, then LS, Burstable, BE), then arrival, and when a pod of
  a class above BE cannot be placed it pre-empts best-effort pods on the one node where that frees enough,
  choosing the node that throws away the least GPU work; pre-empted pods go back to the queue and start over.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ceti.fabric import Allocation, Job, Snapshot, schedule
from ceti.fabric.per_task import ArrivalWindow
from ceti.fabric.placement.registry import make_policy
from ceti.fabric.placement.state import ClusterState, PodRequest, exclusive_gpus, tightest_gpu
from ceti.sim.inflation import (
    cluster_from_nodes,
    fabric_nodes,
    live_placement,
    pod_demand,
    pod_requests,
    target_workload,
)
from ceti.sim.trace import TraceError, TraceNode, TracePod

# Highest first. Unknown or empty classes rank with Burstable.
QOS_RANK = {"Guaranteed": 0, "LS": 1, "Burstable": 2, "BE": 3}
QOS_ORDER = ("Guaranteed", "LS", "Burstable", "BE")
PREEMPTIBLE_RANK = QOS_RANK["BE"]
PRIORITY_POLICIES = frozenset({"fabric"})



def qos_class(qos: str) -> str:
    return qos if qos in QOS_RANK else "Burstable"


@dataclass(frozen=True, slots=True)
class ReplayPod:
    index: int
    arrival_s: float
    duration_s: float
    qos: str
    rank: int


def replay_pods(pods: Sequence[TracePod]) -> list[ReplayPod]:
    """Arrival and run time of every pod; a trace without times cannot be replayed."""
    out = []
    missing = 0
    for i, p in enumerate(pods):
        if p.creation_time is None or p.deletion_time is None:
            missing += 1
            continue
        start = p.scheduled_time if p.scheduled_time is not None else p.creation_time
        duration = max(float(p.deletion_time - max(start, p.creation_time)), 1.0)
        q = qos_class(p.qos)
        out.append(ReplayPod(i, float(p.creation_time), duration, q, QOS_RANK[q]))
    if not out:
        raise TraceError(
            "no pod has creation_time and deletion_time: replay needs a trace with arrival and deletion times"
        )
    return out


def peak_demand_milli(pods: Sequence[ReplayPod], gpu_milli: np.ndarray, scale: float) -> float:
    """The most GPU milli asked at once if every pod started on arrival, with arrivals times `scale`."""
    start = np.asarray([p.arrival_s for p in pods]) * scale
    end = start + np.asarray([p.duration_s for p in pods])
    g = np.asarray([float(gpu_milli[p.index]) for p in pods])
    times = np.concatenate([start, end])
    delta = np.concatenate([g, -g])
    order = np.lexsort((delta, times))  # at equal times, departures (negative) before arrivals
    return float(np.cumsum(delta[order]).max(initial=0.0))


def scale_for_load(pods: Sequence[ReplayPod], gpu_milli: np.ndarray, capacity_milli: int, load: float) -> float:
    """The arrival-time factor at which the peak GPU demand (every pod started on arrival) is `load` x the
    cluster's GPUs. 1.0 when the trace already asks that much or more; run times are never scaled."""
    target = load * capacity_milli
    if peak_demand_milli(pods, gpu_milli, 1.0) >= target:
        return 1.0
    lo, hi = 1e-9, 1.0  # peak demand falls as the scale grows
    if peak_demand_milli(pods, gpu_milli, lo) < target:
        return lo
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        if peak_demand_milli(pods, gpu_milli, mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


def sub_cluster(nodes: Sequence[TraceNode], fraction: float) -> list[TraceNode]:
    """Every k-th node in (GPU model, GPU count, CPU, name) order: a smaller cluster with the same mix, the same
    for every run. The whole trace on its whole cluster never queues, and compressing time alone cannot change
    that when the trace asks less in total than the cluster has."""
    if not 0 < fraction <= 1:
        raise ValueError("cluster fraction must be in (0, 1]")
    ordered = sorted(nodes, key=lambda n: (n.gpu_model, n.gpu_count, n.cpu_milli, n.name))
    if fraction == 1:
        return ordered
    step = 1 / fraction
    picked = sorted({int(i * step) for i in range(max(1, round(len(ordered) * fraction)))})
    return [ordered[i] for i in picked if i < len(ordered)]


@dataclass(slots=True)
class ReplaySetup:
    cluster: ClusterState
    pods: list[TracePod]
    requests: list[PodRequest]
    replay: list[ReplayPod]
    time_scale: float  # arrival times are multiplied by this
    load: float | None
    workload: object = None

    @classmethod
    def build(
        cls,
        nodes: Sequence[TraceNode],
        pods: Sequence[TracePod],
        load: float | None = None,
        cluster_fraction: float = 1.0,
    ) -> ReplaySetup:
        cluster = cluster_from_nodes(sub_cluster(nodes, cluster_fraction))
        pod_list = list(pods)
        replay = replay_pods(pod_list)
        gpu_milli = np.asarray([p.gpu_milli_total for p in pod_list], dtype=np.int64)
        t0 = min(p.arrival_s for p in replay)
        replay = [ReplayPod(p.index, p.arrival_s - t0, p.duration_s, p.qos, p.rank) for p in replay]
        scale = 1.0
        if load is not None:
            if not 0 < load <= 100:
                raise ValueError("load must be above 0 (a share of the cluster's GPUs, e.g. 1.2)")
            scale = scale_for_load(replay, gpu_milli, cluster.total_gpu_milli(), load)
        replay = [
            ReplayPod(p.index, p.arrival_s * scale, p.duration_s, p.qos, p.rank) for p in replay
        ]
        replay.sort(key=lambda p: (p.arrival_s, p.index))
        return cls(cluster, pod_list, pod_requests(cluster, pod_list), replay, scale, load, target_workload(pod_list))


@dataclass(slots=True)
class ClassStats:
    pods: int = 0
    started: int = 0
    never_started: int = 0
    queue_delays_s: list[float] = field(default_factory=list)
    completion_s: list[float] = field(default_factory=list)
    preempted: int = 0

    def as_json(self) -> dict[str, float | int | None]:
        d = np.asarray(self.queue_delays_s) if self.queue_delays_s else np.zeros(0)
        c = np.asarray(self.completion_s) if self.completion_s else np.zeros(0)
        return {
            "pods": self.pods,
            "started": self.started,
            "never_started": self.never_started,
            "mean_queue_delay_s": float(d.mean()) if len(d) else None,
            "p95_queue_delay_s": float(np.percentile(d, 95)) if len(d) else None,
            "mean_completion_s": float(c.mean()) if len(c) else None,
            "p95_completion_s": float(np.percentile(c, 95)) if len(c) else None,
            "preemptions": self.preempted,
        }


@dataclass(slots=True)
class ReplayResult:
    policy: str
    seed: int
    classes: dict[str, ClassStats]
    gpu_utilization: float  # time-weighted mean allocated share of GPU milli over the replay
    utilization_curve: list[tuple[float, float]]  # (time s, allocated share), sampled
    preemptions: int
    makespan_s: float

    def as_json(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "gpu_utilization": self.gpu_utilization,
            "preemptions": self.preemptions,
            "makespan_s": self.makespan_s,
            "classes": {q: s.as_json() for q, s in self.classes.items()},
        }


@dataclass(slots=True)
class _Running:
    pod: ReplayPod
    node: int
    gpus: tuple[int, ...]
    start_s: float
    end_s: float
    live: bool = True


class _Replay:
    def __init__(self, setup: ReplaySetup, policy_name: str, seed: int) -> None:
        self.setup = setup
        self.state = setup.cluster.copy_empty()
        self.policy = make_policy(policy_name, setup.workload)  # type: ignore[arg-type]
        self.rng = np.random.default_rng([seed, 11])
        self.priority = policy_name in PRIORITY_POLICIES
        if hasattr(self.policy, "placeable_tiebreak"):
            # work leaves in a replay; with the tie-break on, LS waited 4,333 s on average on the default trace
            # (load 1.2, a tenth of the cluster) against 9 s without it
            self.policy.placeable_tiebreak = False
        self.queue: list[tuple[tuple, ReplayPod]] = []  # heap ordered by the queue discipline
        self.departures: list[tuple[float, int, _Running]] = []
        self.running_on: dict[int, list[_Running]] = {}
        self.classes = {q: ClassStats() for q in QOS_ORDER}
        self.capacity = max(self.state.total_gpu_milli(), 1)
        self.preemptions = 0
        self._seq = 0
        self.first_arrival: dict[int, float] = {}
        self.first_start: dict[int, float] = {}

    def key(self, p: ReplayPod) -> tuple:
        first = self.first_arrival.get(p.index, p.arrival_s)
        return (p.rank, first, p.index) if self.priority else (first, p.index)

    def enqueue(self, p: ReplayPod) -> None:
        heapq.heappush(self.queue, (self.key(p), p))

    def start(self, p: ReplayPod, node: int, gpus: Sequence[int], now: float) -> None:
        req = self.setup.requests[p.index]
        self.state.allocate(node, req, gpus)
        r = _Running(p, node, tuple(gpus), now, now + p.duration_s)
        self.running_on.setdefault(node, []).append(r)
        self._seq += 1
        heapq.heappush(self.departures, (r.end_s, self._seq, r))
        stats = self.classes[p.qos]
        if p.index not in self.first_start:
            self.first_start[p.index] = now
            stats.started += 1
            stats.queue_delays_s.append(now - self.first_arrival[p.index])

    def stop(self, r: _Running) -> None:
        r.live = False
        self.state.release(r.node, self.setup.requests[r.pod.index], r.gpus)
        self.running_on[r.node].remove(r)

    def schedule(self, now: float) -> None:
        """Try every queued pod in queue order; a shape that failed is not tried again in this pass."""
        failed: set[tuple] = set()
        keep: list[tuple[tuple, ReplayPod]] = []
        while self.queue:
            item = heapq.heappop(self.queue)
            p = item[1]
            req = self.setup.requests[p.index]
            shape = (req.cpu_milli, req.memory_mib, req.gpu_count, req.gpu_milli, id(req.model_ok), p.rank)
            placed = False
            if shape not in failed:
                if self.state.feasible(req).any():
                    choice = self.policy.place(self.state, req, self.rng)
                    if choice is not None:
                        self.start(p, choice[0], choice[1], now)
                        placed = True
                if not placed and self.priority and p.rank < PREEMPTIBLE_RANK:
                    placed = self.preempt_for(p, req, now)
                if not placed:
                    failed.add(shape)
            if not placed:
                keep.append(item)
        for item in keep:
            heapq.heappush(self.queue, item)

    def gpus_on(self, node: int, req: PodRequest) -> tuple[int, ...]:
        if req.is_share:
            return (tightest_gpu(self.state.gpu_free[node], req.gpu_milli),)
        if req.gpu_count:
            return exclusive_gpus(self.state.gpu_free[node], req.gpu_count)
        return ()

    def preempt_for(self, p: ReplayPod, req: PodRequest, now: float) -> bool:
        """Free one node by pre-empting best-effort pods, throwing away the least GPU work; False if no node
        would fit `req` even without its best-effort pods."""
        best: tuple[float, int] | None = None
        s = self.state
        for node, runs in self.running_on.items():
            victims = [r for r in runs if r.pod.rank >= PREEMPTIBLE_RANK]
            if not victims:
                continue
            if req.gpu_count and req.model_ok is not None and not req.model_ok[s.model_idx[node]]:
                continue
            cpu = s.cpu_free[node] + sum(self.setup.requests[r.pod.index].cpu_milli for r in victims)
            mem = s.memory_free[node] + sum(self.setup.requests[r.pod.index].memory_mib for r in victims)
            if cpu < req.cpu_milli or mem < req.memory_mib:
                continue
            gpu = s.gpu_free[node].copy()
            for r in victims:
                for g in r.gpus:
                    gpu[g] += self.setup.requests[r.pod.index].gpu_milli
            if req.gpu_count and int((gpu[: s.gpu_count[node]] >= req.gpu_milli).sum()) < req.gpu_count:
                continue
            lost = sum(
                (now - r.start_s) * self.setup.requests[r.pod.index].gpu_milli_total + 1e-3 for r in victims
            )
            if best is None or lost < best[0]:
                best = (lost, node)
        if best is None:
            return False
        node = best[1]
        # pre-empt the least-progressed victims first until the pod fits
        victims = sorted(
            (r for r in self.running_on[node] if r.pod.rank >= PREEMPTIBLE_RANK), key=lambda r: -r.start_s
        )
        for r in victims:
            self.stop(r)
            self.preemptions += 1
            self.classes[r.pod.qos].preempted += 1
            self.enqueue(r.pod)
            if s.feasible(req)[node]:
                break
        self.start(p, node, self.gpus_on(node, req), now)
        return True

    def run(self) -> tuple[float, list[tuple[float, float]], float]:
        arrivals = self.setup.replay
        i = 0
        now = 0.0
        used_area = 0.0
        last_t = arrivals[0].arrival_s if arrivals else 0.0
        curve: list[tuple[float, float]] = []
        while i < len(arrivals) or self.departures:
            next_arrival = arrivals[i].arrival_s if i < len(arrivals) else np.inf
            next_departure = self.departures[0][0] if self.departures else np.inf
            if next_arrival == np.inf and not self.queue and next_departure == np.inf:
                break
            now = float(min(next_arrival, next_departure))
            used_area += (now - last_t) * self.state.used_gpu_milli()
            last_t = now
            while self.departures and self.departures[0][0] <= now:
                _, _, r = heapq.heappop(self.departures)
                if r.live:
                    self.stop(r)
                    self.classes[r.pod.qos].completion_s.append(r.end_s - self.first_arrival[r.pod.index])
            while i < len(arrivals) and arrivals[i].arrival_s <= now:
                p = arrivals[i]
                self.first_arrival[p.index] = p.arrival_s
                self.classes[p.qos].pods += 1
                self.enqueue(p)
                i += 1
            self.schedule(now)
            curve.append((now, self.state.used_gpu_milli() / self.capacity))
        for _, p in self.queue:
            if p.index not in self.first_start:
                self.classes[p.qos].never_started += 1
        span = max(now - (arrivals[0].arrival_s if arrivals else 0.0), 1e-9)
        return used_area / span / self.capacity, curve, span


# the live round's priorities for the trace's QoS classes; best-effort work is interruptible
QOS_PRIORITY = {"Guaranteed": 90, "LS": 70, "Burstable": 50, "BE": 10}


class _LiveReplay(_Replay):
    """The scheduling round itself (`fabric.schedule`, as the server calls it) at every change, instead of a
    placement policy and this simulator's queue: pods are jobs at their QoS class's priority (best effort
    interruptible), the round decides what starts and what it pre-empts (lower-priority interruptible work, by
    its own rules), and pre-empted pods go back to the queue and start over."""

    def __init__(self, setup: ReplaySetup, name: str, placement: str, seed: int) -> None:
        super().__init__(setup, "fabric", seed)  # fabric's queue order: QoS class first, then arrival
        self.name = name
        self.placement = placement
        self.nodes = fabric_nodes(self.state)
        self.row = {n: i for i, n in enumerate(self.state.names)}
        self.demands = [pod_demand(p) for p in setup.pods]
        self.recent = ArrivalWindow()  # the pods that arrived lately (Snapshot.arrivals)
        self.arrived: set[int] = set()

    def enqueue(self, p: ReplayPod) -> None:
        if p.index not in self.arrived:  # an arrival, not a pre-empted pod going back to the queue
            self.arrived.add(p.index)
            self.recent.add(self.demands[p.index])
        super().enqueue(p)

    def schedule(self, now: float) -> None:
        if not self.queue:
            return
        runs: dict[str, _Running] = {}
        running = []
        for node, on in self.running_on.items():
            for r in on:
                aid = f"{r.pod.index}@{r.start_s}"
                runs[aid] = r
                d = self.demands[r.pod.index]
                running.append(
                    Allocation(aid, str(r.pod.index), self.state.names[node], d.cpu_milli, d.memory_mib, r.gpus,
                               d.gpu_share_milli, QOS_PRIORITY[r.pod.qos], r.pod.rank >= PREEMPTIBLE_RANK,
                               lost_work_hours=(now - r.start_s) / 3600, gpu_models=d.gpu_models)
                )
        queued = sorted(self.queue, key=lambda item: item[0])
        pending = tuple(
            Job(str(p.index), self.demands[p.index], order, QOS_PRIORITY[p.qos],
                interruptible=p.rank >= PREEMPTIBLE_RANK)
            for order, (_, p) in enumerate(queued)
        )
        snap = Snapshot(self.nodes, tuple(running), pending, now, self.recent.arrivals())
        d = schedule(snap, self.placement)
        for pre in d.preemptions:
            r = runs[pre.allocation_id]
            if r.live:
                self.stop(r)
                self.preemptions += 1
                self.classes[r.pod.qos].preempted += 1
                self.enqueue(r.pod)
        started = {s.job_id: s for s in d.starts}
        keep = []
        for item in self.queue:
            s = started.get(str(item[1].index))
            if s is None:
                keep.append(item)
            else:
                self.start(item[1], self.row[s.node_id], s.gpu_indices, now)
        heapq.heapify(keep)
        self.queue = keep


def run_replay(setup: ReplaySetup, policy_name: str, seed: int = 0, curve_points: int = 200) -> ReplayResult:
    """One policy over the whole trace. Only `random` (and ties nowhere else) depend on `seed`. A live entry
    ("live", "live:PLACEMENT", `inflation.live_placement`) runs the scheduling round instead."""
    placement = live_placement(policy_name)
    sim = (
        _Replay(setup, policy_name, seed)
        if placement is None
        else _LiveReplay(setup, policy_name, placement, seed)
    )
    util, curve, span = sim.run()
    if len(curve) > curve_points:
        idx = np.linspace(0, len(curve) - 1, curve_points).astype(int)
        curve = [curve[k] for k in idx]
    classes = {q: s for q, s in sim.classes.items() if s.pods}
    return ReplayResult(policy_name, seed, classes, util, curve, sim.preemptions, span)


def highest_class(results: Sequence[ReplayResult]) -> str | None:
    """The highest QoS class with at least 30 pods (a class of a handful says nothing about a policy)."""
    for q in QOS_ORDER:
        if any(r.classes.get(q) and r.classes[q].pods >= 30 for r in results):
            return q
    return None
