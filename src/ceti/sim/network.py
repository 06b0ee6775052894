"""`ceti sim network`: a synthetic global provider network with developer jobs and network back-fill work.

Round-based: every `round_s` seconds of simulated time the simulator builds a `fabric.Snapshot` from its state
(the nodes that are up, the work running, developer jobs waiting, and the network demand), calls the scheduling
function, and applies the `Decisions`. Between rounds, events happen at their own times: developer arrivals,
completions, network tasks ending, nodes failing, coming back, joining and leaving. Freed capacity is reused at
the next round, as in the live loop.

Network back-fill is demand the networks always have, up to each network's capacity: each round, per GPU model,
the simulator offers as many one-GPU network tasks as there are free GPUs of that model, from the network that
pays most for the model first (what the adapters' revenue estimates rank). They are interruptible, run at a
priority below every developer class, and bid their revenue per GPU-hour, so the fabric puts them only where the
provider's ask is covered. Offers that do not start are withdrawn; a new round makes new ones.

Policies compared in one run, on the same world (same nodes, failures and arrivals):
- `fabric`: `fabric.schedule` (with the server's default placement, or `placement`), with network back-fill
  when network demand is on;
- `no-backfill`: `fabric.schedule` with network demand off (only when it is on for `fabric`);
- `fcfs`: `fabric.schedule_first_fit` over a first-come queue (every developer class at one priority; a
  window of the queue each round, see `fcfs_window`), with the same network demand and no pre-emption: developer
  work waits for network tasks to end.

Work is lost when a node fails or leaves (developer jobs keep what they checkpointed, every `CHECKPOINT_H`) and
when work is pre-empted; the job goes back to the queue with its original place and the work it has left.
Value captured counts only work that was kept: developer bids and network revenue per hour of useful work.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ceti.fabric import Allocation, Decisions, Job, Snapshot, schedule, schedule_first_fit
from ceti.fabric.model import Demand
from ceti.fabric.per_task import DEFAULT_PLACEMENT, ArrivalWindow, check_placement
from ceti.sim.network_world import (
    CHECKPOINT_H,
    NETWORK_LEASE_MEAN_H,
    NETWORK_LOST_H,
    NETWORK_PRIORITY,
    NETWORK_REVENUE_PER_GPU_HOUR,
    NETWORK_TASK_CPU_MILLI,
    NETWORK_TASK_MEMORY_MIB,
    PRIORITY_CLASSES,
    DevJob,
    NetworkSimError,
    World,
)

POLICIES = ("fabric", "no-backfill", "fcfs")
LOST_STEP_H = 1 / 12  # lost work shown to the fabric in 5-minute steps (spares rebuilding every allocation)
FCFS_PRIORITY = 50
FCFS_WINDOW = 64  # `fcfs` tries at most this many waiting developer jobs each round (a per-job scan) ...
FCFS_PER_SHAPE = 2  # ... and at most this many of one shape, so jobs that fit nowhere now do not fill it


def fcfs_window(waiting: list[DevJob]) -> list[DevJob]:
    """The jobs `fcfs` tries this round: arrival order, at most `FCFS_PER_SHAPE` per shape (GPUs, gang, CPU,
    memory, regions), at most `FCFS_WINDOW` in all."""
    seen: dict[tuple, int] = {}
    out = []
    for j in waiting:
        d = j.demand
        key = (d.gpu_count, j.gang_size, d.cpu_milli, d.memory_mib, d.regions)
        if seen.get(key, 0) >= FCFS_PER_SHAPE:
            continue
        seen[key] = seen.get(key, 0) + 1
        out.append(j)
        if len(out) >= FCFS_WINDOW:
            break
    return out

_ARRIVE, _END, _DOWN, _UP = 0, 1, 2, 3


@dataclass(slots=True)
class _Task:
    alloc_id: str
    node: int
    gpu_indices: tuple[int, ...]
    cpu_milli: int
    memory_mib: int
    cached: Allocation | None = None
    cached_step: int = -1


@dataclass(slots=True)
class _Run:
    """One attempt of a developer job, or one network task."""

    key: str  # developer job id or network task id
    tasks: list[_Task]
    start_s: float
    end_s: float
    gpus: int
    value_per_hour: float  # the whole run
    priority: int
    interruptible: bool
    dev: DevJob | None = None
    network: str = ""
    live: bool = True


@dataclass(slots=True)
class _DevState:
    remaining_s: float
    first_start_s: float | None = None
    attempts: int = 0
    job: Job | None = None


@dataclass(slots=True)
class PolicyResult:
    policy: str
    network_demand: bool
    hours: float
    gpu_hours_available: float
    gpu_hours_developer: float
    gpu_hours_network: float
    value_developer: float
    value_network: float
    value_by_network: dict[str, float]
    jobs_arrived: int
    jobs_started: int
    jobs_finished: int
    jobs_unschedulable: int
    wait_s: list[float]
    wait_by_class: dict[str, list[float]]
    preempted_network: int
    preempted_developer: int
    network_gpu_hours_lost_to_preemption: float
    developer_gpu_hours_lost_to_preemption: float
    node_failures: int
    runs_lost_to_failures: int
    developer_gpu_hours_lost_to_failures: float
    network_gpu_hours_lost_to_failures: float
    idle_after_round_gpu_hours: float = 0.0
    curve: list[tuple[float, int, int, int]] = field(default_factory=list)  # (hour, developer, network, up)
    upper_bound: float | None = None

    @property
    def idle_gpu_hours(self) -> float:
        return max(self.gpu_hours_available - self.gpu_hours_developer - self.gpu_hours_network, 0.0)

    @property
    def idle_share(self) -> float:
        return self.idle_gpu_hours / self.gpu_hours_available if self.gpu_hours_available else 0.0

    @property
    def value_total(self) -> float:
        return self.value_developer + self.value_network

    @property
    def value_per_hour(self) -> float:
        return self.value_total / self.hours if self.hours else 0.0

    def as_json(self) -> dict[str, object]:
        w = np.asarray(self.wait_s) if self.wait_s else np.zeros(0)

        def stats(x: list[float]) -> dict[str, float | int | None]:
            a = np.asarray(x) if x else np.zeros(0)
            return {
                "started": len(a),
                "mean_s": float(a.mean()) if len(a) else None,
                "p95_s": float(np.percentile(a, 95)) if len(a) else None,
            }

        return {
            "policy": self.policy,
            "network_demand": self.network_demand,
            "value_per_hour": self.value_per_hour,
            "value_developer_per_hour": self.value_developer / self.hours,
            "value_network_per_hour": self.value_network / self.hours,
            "value_by_network_per_hour": {k: v / self.hours for k, v in self.value_by_network.items()},
            "upper_bound_per_hour": None if self.upper_bound is None else self.upper_bound / self.hours,
            "value_share_of_bound": (
                None if not self.upper_bound else self.value_total / self.upper_bound
            ),
            "gpu_hours_available": self.gpu_hours_available,
            "gpu_hours_developer": self.gpu_hours_developer,
            "gpu_hours_network": self.gpu_hours_network,
            "idle_gpu_hours": self.idle_gpu_hours,
            "idle_share": self.idle_share,
            "idle_share_left_by_rounds": (
                self.idle_after_round_gpu_hours / self.gpu_hours_available if self.gpu_hours_available else 0.0
            ),
            "jobs_arrived": self.jobs_arrived,
            "jobs_started": self.jobs_started,
            "jobs_finished": self.jobs_finished,
            "jobs_never_started": self.jobs_arrived - self.jobs_started - self.jobs_unschedulable,
            "jobs_unschedulable": self.jobs_unschedulable,
            "time_to_start_mean_s": float(w.mean()) if len(w) else None,
            "time_to_start_p95_s": float(np.percentile(w, 95)) if len(w) else None,
            "time_to_start_by_class": {k: stats(v) for k, v in self.wait_by_class.items()},
            "preemptions_of_network_work": self.preempted_network,
            "preemptions_of_developer_work": self.preempted_developer,
            "network_gpu_hours_lost_to_preemption": self.network_gpu_hours_lost_to_preemption,
            "developer_gpu_hours_lost_to_preemption": self.developer_gpu_hours_lost_to_preemption,
            "node_failures": self.node_failures,
            "runs_lost_to_failures": self.runs_lost_to_failures,
            "developer_gpu_hours_lost_to_failures": self.developer_gpu_hours_lost_to_failures,
            "network_gpu_hours_lost_to_failures": self.network_gpu_hours_lost_to_failures,
        }


class NetworkSim:
    """One policy over one world. `step_to` and the public fields exist for tests that drive it round by round."""

    def __init__(
        self,
        world: World,
        *,
        policy: str = "fabric",
        network_demand: bool = True,
        round_s: float = 60.0,
        seed: int = 1,
        placement: str = DEFAULT_PLACEMENT,
    ) -> None:
        if policy not in POLICIES:
            raise NetworkSimError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        try:
            check_placement(placement)
        except ValueError as exc:
            raise NetworkSimError(str(exc)) from None
        if not round_s > 0:
            raise NetworkSimError(f"--round-s must be above 0, not {round_s:g}")
        self.world = world
        self.policy = policy
        self.network_demand = network_demand
        self.round_s = float(round_s)
        # the fabric's rounds place as the server's do (`CETI_PLACEMENT`); fcfs is its own first-fit scan
        self.scheduler: Callable[[Snapshot], Decisions] = (
            schedule_first_fit if policy == "fcfs" else functools.partial(schedule, placement=placement)
        )
        self.rng = np.random.default_rng([seed, 77])
        self.now = 0.0
        n = len(world.nodes)
        self.up = [False] * n
        self.used_gpus = [0] * n
        self.runs_on: list[set[str]] = [set() for _ in range(n)]
        self.runs: dict[str, _Run] = {}  # insertion order: start order, the same for every replay of a seed
        self.dev_runs: dict[str, _Run] = {}
        self.allocs: dict[str, Allocation] = {}  # what the fabric sees running, by allocation id
        self.task_of_alloc: dict[str, _Run] = {}
        self.pending: dict[str, DevJob] = {}  # job id -> job, waiting
        self.recent = ArrivalWindow()  # developer jobs that arrived lately, as the server reads them
        self.dev_state: dict[str, _DevState] = {}
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._alloc_seq = 0
        self._net_seq = 0
        self._nodes_cache: tuple | None = None
        self.net_gpus = dict.fromkeys(NETWORK_REVENUE_PER_GPU_HOUR, 0)
        # integrals (GPU-seconds) and counters
        self.gpu_up = 0
        self.gpu_dev = 0
        self.gpu_net = 0
        self.t_acc = 0.0
        self.up_s = self.dev_s = self.net_s = 0.0
        self.value_dev = 0.0
        self.value_net = dict.fromkeys(NETWORK_REVENUE_PER_GPU_HOUR, 0.0)
        self.started = 0
        self.finished = 0
        self.unschedulable = 0
        self.wait_s: list[float] = []
        self.wait_by_class: dict[str, list[float]] = {c[0]: [] for c in PRIORITY_CLASSES}
        self.preempted_net = self.preempted_dev = 0
        self.net_lost_preempt = self.dev_lost_preempt = 0.0
        self.failures = 0
        self.runs_failed = 0
        self.dev_lost_fail = self.net_lost_fail = 0.0
        self.curve: list[tuple[float, int, int, int]] = []
        self.idle_after_round_s = 0.0
        self.last_decisions = Decisions()
        for job in world.jobs:
            self._push(job.arrival_s, _ARRIVE, job)
        for node in world.nodes:
            for a, b in node.up:
                if a <= 0:
                    self._set_up(node.index, True)
                else:
                    self._push(a, _UP, node.index)
                if b < world.horizon_s:
                    self._push(b, _DOWN, node.index)

    # ------------------------------------------------------------ events
    def _push(self, t: float, kind: int, what: object) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, what))

    def _advance(self, t: float) -> None:
        dt = t - self.t_acc
        if dt > 0:
            self.up_s += dt * self.gpu_up
            self.dev_s += dt * self.gpu_dev
            self.net_s += dt * self.gpu_net
            self.t_acc = t

    def _set_up(self, i: int, up: bool) -> None:
        if self.up[i] == up:
            return
        self.up[i] = up
        self.gpu_up += self.world.nodes[i].gpus if up else -self.world.nodes[i].gpus
        self._nodes_cache = None

    def _handle(self, t: float, kind: int, what: object) -> None:
        if kind == _ARRIVE:
            job: DevJob = what  # type: ignore[assignment]
            self.dev_state[job.id] = _DevState(job.run_s)
            self.pending[job.id] = job
            self.recent.add(job.demand, job.gang_size)
        elif kind == _END:
            run: _Run = what  # type: ignore[assignment]
            if run.live and run.end_s <= t:
                self._stop(run, t, lost_h=0.0)
                if run.dev is not None:
                    self.finished += 1
                    del self.dev_state[run.dev.id]
        elif kind == _DOWN:
            i: int = what  # type: ignore[assignment]
            self.failures += 1
            for key in sorted(self.runs_on[i]):
                run = self.runs[key]
                self.runs_failed += 1
                lost = self._lost_h(run, t)
                if run.dev is not None:
                    self.dev_lost_fail += lost * run.gpus
                else:
                    self.net_lost_fail += lost * run.gpus
                self._stop(run, t, lost_h=lost)
            self._set_up(i, False)
        elif kind == _UP:
            self._set_up(what, True)  # type: ignore[arg-type]

    def _lost_h(self, run: _Run, t: float) -> float:
        elapsed_h = (t - run.start_s) / 3600
        if run.dev is None:
            return min(elapsed_h, NETWORK_LOST_H)
        return elapsed_h % CHECKPOINT_H

    def _stop(self, run: _Run, t: float, lost_h: float) -> None:
        """End a run at `t`; `lost_h` of its work is thrown away. A developer job with work left is queued."""
        run.live = False
        del self.runs[run.key]
        self.dev_runs.pop(run.key, None)
        elapsed_h = max(t - run.start_s, 0.0) / 3600
        useful_h = max(elapsed_h - lost_h, 0.0)
        for task in run.tasks:
            self.runs_on[task.node].discard(run.key)
            self.used_gpus[task.node] -= len(task.gpu_indices)
            del self.task_of_alloc[task.alloc_id]
            del self.allocs[task.alloc_id]
        if run.dev is not None:
            self.gpu_dev -= run.gpus
            self.value_dev += useful_h * run.value_per_hour
            st = self.dev_state.get(run.dev.id)
            if st is not None and lost_h >= 0 and t < run.end_s:
                st.remaining_s = max(st.remaining_s - useful_h * 3600, 1.0)
                self.pending[run.dev.id] = run.dev
        else:
            self.gpu_net -= run.gpus
            self.net_gpus[run.network] -= run.gpus
            self.value_net[run.network] += useful_h * run.value_per_hour

    # ------------------------------------------------------------ the round
    def _nodes(self) -> tuple:
        if self._nodes_cache is None:
            self._nodes_cache = tuple(n.node for n in self.world.nodes if self.up[n.index])
        return self._nodes_cache

    def _allocation(self, run: _Run, task: _Task, t: float) -> Allocation:
        """The fabric's view of one task. Lost work moves in `LOST_STEP_H` steps, so a task's view is rebuilt
        only when its step changes."""
        if run.dev is None:
            step = 0
        else:
            step = int(((t - run.start_s) / 3600 % CHECKPOINT_H) / LOST_STEP_H)
        if task.cached is None or task.cached_step != step:
            task.cached_step = step
            task.cached = Allocation(
                id=task.alloc_id,
                job_id=run.key,
                node_id=self.world.nodes[task.node].node.id,
                cpu_milli=task.cpu_milli,
                memory_mib=task.memory_mib,
                gpu_indices=task.gpu_indices,
                priority=run.priority,
                interruptible=run.interruptible,
                value_per_hour=run.value_per_hour / len(run.tasks),
                lost_work_hours=NETWORK_LOST_H if run.dev is None else step * LOST_STEP_H,
            )
            self.allocs[task.alloc_id] = task.cached
        return task.cached

    def _dev_job(self, job: DevJob) -> Job:
        st = self.dev_state[job.id]
        if st.job is None:
            fcfs = self.policy == "fcfs"
            st.job = Job(
                id=job.id,
                demand=job.demand,
                order=job.order,
                priority=FCFS_PRIORITY if fcfs else job.priority,
                gang_size=job.gang_size,
                bid_per_hour=job.bid_per_hour,
                interruptible=job.interruptible and not fcfs,
            )
        return st.job

    def network_offers(self) -> list[Job]:
        """One-GPU network tasks for the free GPUs of each model, best-paying network first."""
        if not self.network_demand:
            return []
        free: dict[str, int] = {}
        for n in self.world.nodes:
            if self.up[n.index]:
                f = n.gpus - self.used_gpus[n.index]
                if f > 0:
                    free[n.model] = free.get(n.model, 0) + f
        room = {k: self.world.network_capacity_gpus.get(k, 0) - v for k, v in self.net_gpus.items()}
        offers: list[Job] = []
        for model in sorted(free):
            ranked = sorted(
                (-rev[model], name) for name, rev in NETWORK_REVENUE_PER_GPU_HOUR.items() if model in rev
            )
            want = free[model]
            for neg_rev, name in ranked:
                take = min(want, max(room[name], 0))
                for _ in range(take):
                    self._net_seq += 1
                    offers.append(
                        Job(
                            id=f"{name}-{self._net_seq}",
                            demand=Demand(
                                NETWORK_TASK_CPU_MILLI,
                                NETWORK_TASK_MEMORY_MIB,
                                gpu_count=1,
                                gpu_models=frozenset({model}),
                            ),
                            order=10**9 + self._net_seq,
                            priority=NETWORK_PRIORITY,
                            bid_per_hour=-neg_rev,
                            interruptible=True,
                        )
                    )
                room[name] -= take
                want -= take
                if want <= 0:
                    break
        return offers

    def snapshot(self, t: float) -> tuple[Snapshot, dict[str, Job]]:
        for run in self.dev_runs.values():
            for task in run.tasks:
                self._allocation(run, task, t)
        running = tuple(self.allocs.values())
        waiting = sorted(self.pending.values(), key=lambda j: j.order)
        if self.policy == "fcfs":
            waiting = fcfs_window(waiting)
        dev = [self._dev_job(j) for j in waiting]
        offers = self.network_offers()
        pending = tuple(dev + offers)
        arrivals = self.recent.arrivals()
        snap = Snapshot(nodes=self._nodes(), running=running, pending=pending, now=t, arrivals=arrivals)
        return snap, {j.id: j for j in offers}

    def _round(self, t: float) -> None:
        snap, offers = self.snapshot(t)
        dec = self.scheduler(snap)
        self.last_decisions = dec
        self._apply(dec, t, offers)
        self.curve.append((t / 3600, self.gpu_dev, self.gpu_net, self.gpu_up))
        # idle the round left behind, held until the next round (the rest of idle is capacity freed between
        # rounds, waiting for the next one)
        span = min(self.round_s, self.world.horizon_s - t)
        self.idle_after_round_s += (self.gpu_up - self.gpu_dev - self.gpu_net) * span

    def _apply(self, dec: Decisions, t: float, offers: dict[str, Job]) -> None:
        for p in dec.preemptions:
            run = self.task_of_alloc.get(p.allocation_id)
            if run is None or not run.live:
                continue
            lost = self._lost_h(run, t)
            if run.dev is None:
                self.preempted_net += 1
                self.net_lost_preempt += lost * run.gpus
            else:
                self.preempted_dev += 1
                self.dev_lost_preempt += lost * run.gpus
            self._stop(run, t, lost_h=lost)
        by_job: dict[str, list] = {}
        for s in dec.starts:
            by_job.setdefault(s.job_id, []).append(s)
        index = {n.node.id: n.index for n in self.world.nodes}
        for job_id in sorted(by_job, key=lambda k: (k not in self.pending, k)):
            starts = sorted(by_job[job_id], key=lambda s: s.task_index)
            if job_id in self.pending:
                job = self.pending.pop(job_id)
                st = self.dev_state[job_id]
                tasks = [self._task(index[s.node_id], s.gpu_indices, job.demand) for s in starts]
                run = _Run(
                    job_id, tasks, t, t + st.remaining_s, job.gpus, job.bid_per_hour, job.priority,
                    job.interruptible, dev=job,
                )
                if st.first_start_s is None:
                    st.first_start_s = t
                    self.started += 1
                    self.wait_s.append(t - job.arrival_s)
                    self.wait_by_class[job.priority_class].append(t - job.arrival_s)
                st.attempts += 1
                self.gpu_dev += run.gpus
            elif job_id in offers:
                offer = offers[job_id]
                network = job_id.rsplit("-", 1)[0]
                s = starts[0]
                tasks = [self._task(index[s.node_id], s.gpu_indices, offer.demand)]
                lease_s = float(self.rng.exponential(NETWORK_LEASE_MEAN_H * 3600))
                run = _Run(
                    job_id, tasks, t, t + max(lease_s, 1.0), 1, offer.bid_per_hour or 0.0, offer.priority, True,
                    network=network,
                )
                self.gpu_net += 1
                self.net_gpus[network] += 1
            else:
                continue
            self.runs[job_id] = run
            if run.dev is not None:
                self.dev_runs[job_id] = run
            for task in tasks:
                self._allocation(run, task, t)
                self.runs_on[task.node].add(job_id)
                self.task_of_alloc[task.alloc_id] = run
            self._push(run.end_s, _END, run)
        for u in dec.unschedulable:
            if u.job_id in self.pending:
                del self.pending[u.job_id]
                self.unschedulable += 1

    def _task(self, node: int, gpus: tuple[int, ...], d: Demand) -> _Task:
        self._alloc_seq += 1
        self.used_gpus[node] += len(gpus)
        return _Task(f"a{self._alloc_seq}", node, tuple(gpus), d.cpu_milli, d.memory_mib)

    # ------------------------------------------------------------ driving
    def step_to(self, t: float) -> None:
        """Handle every event up to `t`, then run the round at `t`."""
        t = min(t, self.world.horizon_s)
        while self.events and self.events[0][0] <= t:
            et, _, kind, what = heapq.heappop(self.events)
            self._advance(et)
            self._handle(et, kind, what)
        self._advance(t)
        self.now = t
        if t < self.world.horizon_s:
            self._round(t)

    def run(self, on_round: Callable[[int, int], None] | None = None) -> PolicyResult:
        horizon = self.world.horizon_s
        rounds = math.ceil(horizon / self.round_s)
        for r in range(rounds + 1):
            self.step_to(min(r * self.round_s, horizon))
            if on_round is not None:
                on_round(r, rounds)
        return self.result()

    def result(self) -> PolicyResult:
        t = self.now
        value_dev = self.value_dev
        value_net = dict(self.value_net)
        for run in self.runs.values():  # work still running at the end counts up to the end
            h = max(t - run.start_s, 0.0) / 3600
            if run.dev is not None:
                value_dev += h * run.value_per_hour
            else:
                value_net[run.network] += h * run.value_per_hour
        return PolicyResult(
            policy=self.policy,
            network_demand=self.network_demand,
            hours=t / 3600,
            gpu_hours_available=self.up_s / 3600,
            gpu_hours_developer=self.dev_s / 3600,
            gpu_hours_network=self.net_s / 3600,
            value_developer=value_dev,
            value_network=sum(value_net.values()),
            value_by_network=value_net,
            jobs_arrived=len(self.dev_state) + self.finished + self.unschedulable,
            jobs_started=self.started,
            jobs_finished=self.finished,
            jobs_unschedulable=self.unschedulable,
            wait_s=list(self.wait_s),
            wait_by_class={k: list(v) for k, v in self.wait_by_class.items()},
            preempted_network=self.preempted_net,
            preempted_developer=self.preempted_dev,
            network_gpu_hours_lost_to_preemption=self.net_lost_preempt,
            developer_gpu_hours_lost_to_preemption=self.dev_lost_preempt,
            node_failures=self.failures,
            runs_lost_to_failures=self.runs_failed,
            developer_gpu_hours_lost_to_failures=self.dev_lost_fail,
            network_gpu_hours_lost_to_failures=self.net_lost_fail,
            idle_after_round_gpu_hours=self.idle_after_round_s / 3600,
            curve=list(self.curve),
        )


def policies_for(network_demand: bool) -> list[tuple[str, bool]]:
    """(policy, network demand) pairs one run compares."""
    if network_demand:
        return [("fabric", True), ("no-backfill", False), ("fcfs", True)]
    return [("fabric", False), ("fcfs", False)]


def run_network(
    world: World,
    *,
    network_demand: bool = True,
    round_s: float = 60.0,
    seed: int = 1,
    bound: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
    placement: str = DEFAULT_PLACEMENT,
) -> dict[str, PolicyResult]:
    """Every policy on the same world, and the LP bound for each network-demand setting."""
    from ceti.sim.network_bound import upper_bound

    results: dict[str, PolicyResult] = {}
    bounds: dict[bool, float] = {}
    for name, demand in policies_for(network_demand):
        sim = NetworkSim(
            world, policy=name, network_demand=demand, round_s=round_s, seed=seed, placement=placement
        )
        cb = None if on_progress is None else (lambda r, n, _name=name: on_progress(_name, r, n))
        res = sim.run(cb)
        if bound:
            if demand not in bounds:
                bounds[demand] = upper_bound(world, network_demand=demand)
            res.upper_bound = bounds[demand]
        results[name] = res
    return results
