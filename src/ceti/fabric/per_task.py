"""Per-task placement: every task of a priority level, in queue order, onto the node a placement policy picks.

The class flow (`schedule._Round`) places a round of 100,000 jobs on 100,000 nodes in seconds, but packs
inside a class first-fit from a cursor, which on the Alibaba trace leaves more GPUs unallocated than the
first-fit baseline (docs/sim-inflation.md, "The live round"). Where a round is small enough to score every
node for every task (`fits_round`), the same placement policies the trace experiments measure
(`fabric.placement`: FGD's fragmentation gradient, with fabric's GPU-model protection) pick the node instead.

Economics come first: a task may only go to the nodes, among those that fit it within its bid, whose useful
work costs least (`schedule.useful_work_cost`), within `COST_TOLERANCE`; the policy picks among those, and the
cost breaks its ties. For a job without a bid the cost is the ask over speed and reliability: it gets the
cheapest useful work. A job's bid is the price it accepts, so for it every node it affords is as good, and
only speed and reliability count. Taking the cheapest node for a job that could pay more leaves the jobs that
can pay only the cheapest nodes waiting: on the synthetic provider network (`ceti sim network`, 12 h, 500
nodes) that kept 394 developer jobs from ever starting, against 60 with this rule (docs/fabric-core.md). On a
cluster where every node asks the same (the Alibaba trace), every node that fits is allowed.

The policy's target workload is learnt from the snapshot itself (`learnt_workload`: the jobs that arrived
lately, one class per task keyed as FGD keys the trace's pods): the live round has no trace file. The rules
that assume work only arrives (fabric's share plan, reservations and placeable measure) are off, as in the
trace replay, because live work also leaves: switched on in the live round they cut unallocated GPUs on the
inflation experiment by about a seventh, and tripled the latency-sensitive pods' waits on the replay.
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

from ceti.fabric.classes import Need
from ceti.fabric.model import WHOLE_GPU_MILLI, Demand, Job, Snapshot
from ceti.fabric.placement.registry import make_policy, policy_names
from ceti.fabric.placement.state import MAX_GPUS_PER_NODE, ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload, TaskClass
from ceti.fabric.schedule import _Round, useful_work_cost  # it imports this module only when a round needs it

FLOW = "flow"
DEFAULT_PLACEMENT = "fabric"  # what the server asks for (`CETI_PLACEMENT`)
POLICY_MAX_NODES = 4096  # above this many nodes the class flow places the round
POLICY_MAX_WORK = 10_000_000  # nodes x pending tasks: a task costs about 0.1 us per node to place
COST_TOLERANCE = 0.01  # useful-work costs within 1% of the cheapest count as equal
# classes of the learnt workload, the most popular: live tasks may come in thousands of one-off shapes, and
# FGD's measure costs O(classes) per option (2,000 nodes x 3,000 jobs of the bench's snapshot: 0.9 s a round
# at 256, 5.5 s with all 1,653 classes). Fewer drop the rarer type-constrained classes that GPU-model
# protection reads: on the trace's `gpuspec33` (127 classes in the file), the live round at 32 left 816 GPUs
# unallocated (seed 42), at 256 365
MAX_CLASSES = 256
ARRIVAL_WINDOW = 4096  # the simulators' and the server's lately arrived jobs: this many, the latest


def placement_names() -> list[str]:
    """What `schedule(..., placement=)` accepts: the class flow, or a placement policy by name."""
    return [FLOW, *policy_names()]


def check_placement(name: str) -> str:
    if name not in placement_names():
        raise ValueError(f"unknown placement {name!r}; known: {', '.join(placement_names())}")
    return name


def fits_round(n_nodes: int, n_tasks: int, max_gpus: int) -> bool:
    """Whether per-task placement is affordable for a round of this size (and the nodes fit its GPU slots)."""
    return (
        n_nodes <= POLICY_MAX_NODES and n_nodes * n_tasks <= POLICY_MAX_WORK and max_gpus <= MAX_GPUS_PER_NODE
    )


def learnt_workload(snapshot: Snapshot) -> TargetWorkload:
    """The target workload of FGD's measure: per task, the jobs that arrived lately (`Snapshot.arrivals`), or
    without them the tasks running and pending now; the `MAX_CLASSES` most popular classes, then those
    covering 95% of their tasks (FGD's rule).

    Arrivals are the mix of what comes next. Running work over-counts what runs long: on the trace replay
    (`default`, a tenth of the cluster at load 1.2), learning from running and pending work left
    latency-sensitive pods waiting 31 s on average and whole-node pods 1,571 s, against 6 and 664 s learning
    from the arrivals."""
    global _last_arrivals
    if snapshot.arrivals and _last_arrivals[0] is snapshot.arrivals:
        return _last_arrivals[
            1
        ]  # the same arrivals as the last round's (a simulator's rounds between arrivals)
    counts: Counter[TaskClass] = Counter()
    if snapshot.arrivals:
        for d, tasks in snapshot.arrivals:
            counts[_task_class(d)] += max(1, tasks)
    else:
        for a in snapshot.running:
            n = len(a.gpu_indices)
            spec = "|".join(sorted(a.gpu_models)) if n else ""
            counts[TaskClass(a.cpu_milli, a.gpu_milli_per_gpu if n else 0, n, spec)] += 1
        for j in snapshot.pending:
            counts[_task_class(j.demand)] += max(1, j.gang_size)
    top = sorted(counts.items(), key=lambda kv: (kv[1], kv[0].sort_key()), reverse=True)[:MAX_CLASSES]
    workload = TargetWorkload.from_counts(Counter(dict(top)))
    if snapshot.arrivals:
        _last_arrivals = (
            snapshot.arrivals,
            workload,
        )  # holds the tuple: its identity cannot be reused meanwhile
    return workload


_last_arrivals: tuple[tuple, TargetWorkload | None] = ((), None)


class ArrivalWindow:
    """The latest `ARRIVAL_WINDOW` jobs that arrived, as a caller builds `Snapshot.arrivals` round after round.
    `arrivals()` returns the same tuple object until the next `add`, so `learnt_workload` counts a window once
    however many rounds see it."""

    def __init__(self) -> None:
        self._window: deque[tuple[Demand, int]] = deque(maxlen=ARRIVAL_WINDOW)
        self._tuple: tuple[tuple[Demand, int], ...] = ()

    def add(self, demand: Demand, tasks: int = 1) -> None:
        self._window.append((demand, tasks))
        self._tuple = ()

    def arrivals(self) -> tuple[tuple[Demand, int], ...]:
        if not self._tuple:
            self._tuple = tuple(self._window)
        return self._tuple


def _task_class(d: Demand) -> TaskClass:
    spec = "|".join(sorted(d.gpu_models)) if d.gpu_count else ""
    return TaskClass(d.cpu_milli, d.gpu_milli_per_gpu if d.gpu_count else 0, d.gpu_count, spec)


class PerTaskPlacer:
    """Places a round's levels task by task for `_Round.run` (which keeps gangs across nodes, pre-emption
    and the reasons)."""

    def __init__(self, rnd: _Round, policy: str, snapshot: Snapshot) -> None:
        self.round = rnd
        self.policy_name = policy
        self.workload = learnt_workload(snapshot)
        t = rnd.t
        self.models = ["", *t.model_names]
        # a node's model for the policy's measure: its first GPU's (nodes of mixed models are rare; which of
        # their GPUs a constrained task may use is checked exactly below)
        self.model_idx = np.where(t.gpu_count > 0, t.gpu_model[:, 0] + 1, 0).astype(np.int64)
        self.rng = np.random.default_rng(0)

    def _state(self) -> ClusterState:
        """The residual room now, as the placement policies read it (rows = the node table's rows)."""
        t = self.round.t
        cpu, mem, _, gpu = self.round.free.arrays()
        slots = np.zeros((t.n, MAX_GPUS_PER_NODE), np.int64)
        g = min(gpu.shape[1], MAX_GPUS_PER_NODE) if t.n else 0
        slots[:, :g] = np.maximum(gpu[:, :g], 0)
        return ClusterState(
            names=t.ids,
            models=self.models,
            model_idx=self.model_idx,
            gpu_count=t.gpu_count,
            cpu_capacity=t.cpu_total,
            memory_capacity=t.mem_total,
            cpu_free=cpu.copy(),
            memory_free=mem.copy(),
            gpu_free=slots,
            tag_mask=np.zeros(t.n, np.int64),
        )

    def place_level(self, level: list[Need]) -> None:
        """Every job of the level that fits, in queue order across its kinds; the rest stay in
        `round.left`."""
        rnd = self.round
        state = self._state()
        policy = make_policy(self.policy_name, self.workload)
        if hasattr(policy, "placeable_tiebreak"):
            policy.placeable_tiebreak = False  # work leaves: the arrival-only rules are off (module doc)
        disk = rnd.free.arrays()[2].copy()
        queue = sorted(
            ((j.order, j.id, i, j) for i, need in enumerate(level) for j in rnd.left[id(need.kind)]),
            key=lambda x: x[:2],
        )
        static: dict[int, np.ndarray] = {}
        failed: set[tuple] = set()  # shapes no node fitted: room only shrinks within the level
        placed_ids: set[str] = set()
        for _, _, i, job in queue:
            need = level[i]
            d = job.demand
            shape = (i, d.cpu_milli, d.memory_mib, d.disk_mib, job.bid_per_hour)
            if shape in failed:
                continue
            ok = static.get(i)
            if ok is None:
                ok = static[i] = self._static_ok(need)
            placed: list[tuple[int, list[int]]] = []
            for _ in range(need.kind.gang_size):
                got = self._place_task(state, policy, need, job, ok, disk)
                if got is None:
                    break
                placed.append(got)
            if len(placed) < need.kind.gang_size:
                pod = _pod(d)
                for r, pos in placed:  # all or nothing
                    rnd.free.give(r, d, pos)
                    state.release(r, pod, pos)
                    disk[r] += d.disk_mib
                failed.add(shape)
                continue
            rnd._commit(job, placed)
            placed_ids.add(job.id)
        if placed_ids:
            for need in level:
                k = need.kind
                rnd.left[id(k)] = [j for j in rnd.left[id(k)] if j.id not in placed_ids]

    def _static_ok(self, need: Need) -> np.ndarray:
        """Nodes the kind may ever use: its places and node ids, taking new work, with GPUs it may use."""
        t = self.round.t
        rows = np.arange(t.n)
        ok = need.place_ok(t, rows) & t.schedulable
        if need.kind.gpu_count:
            ok &= need.gpu_ok(t, rows).sum(axis=1) >= (
                1 if need.kind.gpu_share_milli else need.kind.gpu_count
            )
        return ok

    def _place_task(
        self,
        state: ClusterState,
        policy: object,
        need: Need,
        job: Job,
        ok: np.ndarray,
        disk: np.ndarray,
    ) -> tuple[int, list[int]] | None:
        rnd = self.round
        t = rnd.t
        k = need.kind
        d = job.demand
        pod = _pod(d)
        fit = state.feasible(pod) & ok
        if d.disk_mib > 0:
            fit &= disk >= d.disk_mib
        if need.constrained_gpus:
            mixed = np.flatnonzero(fit & ~t.homogeneous)
            if len(mixed):  # a node of mixed models: count only the GPUs the kind may use
                usable = need.gpu_ok(t, mixed)[:, :MAX_GPUS_PER_NODE] & (
                    state.gpu_free[mixed, : t.G] >= pod.gpu_milli
                )
                fit[mixed] = usable.sum(axis=1) >= pod.gpu_count
        cpu = d.cpu_milli / 1000.0
        price = k.gpu_count * t.price_gpu + cpu * t.price_cpu
        if job.bid_per_hour is not None:
            fit &= price * k.gang_size <= job.bid_per_hour + 1e-9
        rows = np.flatnonzero(fit)
        if len(rows) == 0:
            return None
        norm = k.gpu_count * rnd.max_pg + cpu * rnd.max_pc
        # a job's bid is the price it accepts: every node it affords is as good to it, and speed and
        # reliability decide; a job without one gets the cheapest useful work
        ask = price[rows] if job.bid_per_hour is None else np.zeros(len(rows))
        cost = useful_work_cost(k, ask, norm, need.node_speed(t, rows), t.reliability[rows])
        allowed = np.zeros(t.n, np.bool_)
        allowed[rows[cost <= cost.min() * (1.0 + COST_TOLERANCE)]] = True
        prefer = np.full(t.n, np.inf)
        prefer[rows] = cost
        choice = policy.place(state, pod, self.rng, allowed, prefer)  # type: ignore[attr-defined]
        if choice is None:  # pragma: no cover - the allowed nodes fit by construction
            return None
        r, gpus = choice
        f = rnd.free
        mask = need.gpu_ok_list(t, r)
        if pod.is_share and (mask is None or mask[gpus[0]]):
            g = gpus[0]  # the policy's GPU: for a share, which GPU is the policy's choice as much as the node
            f.gpu[r][g] -= d.gpu_share_milli
            f.cpu[r] -= d.cpu_milli
            f.mem[r] -= d.memory_mib
            f.disk[r] -= d.disk_mib
            f.dirty.add(r)
            pos = [g]
        else:
            got = f.take(r, d, mask)
            if got is None:  # pragma: no cover - the node fits by construction
                return None
            pos = got
        state.allocate(r, pod, pos)
        disk[r] -= d.disk_mib
        return r, pos


def _pod(d) -> PodRequest:  # type: ignore[no-untyped-def]
    count = d.gpu_count
    return PodRequest(
        d.cpu_milli, d.memory_mib, count, (d.gpu_share_milli or WHOLE_GPU_MILLI) if count else 0
    )
