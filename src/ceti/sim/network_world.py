"""The synthetic provider network of `ceti sim network`: nodes, prices, churn, developer jobs and network demand.

Everything here is drawn once per seed, before any policy runs, so every policy in one run sees the same nodes,
the same failures and the same arrivals. All figures are synthetic; the tables below say what they stand for.

- GPU mix: node shapes (GPU model, GPUs, CPUs, memory) of the Alibaba GPU trace v2023 node list, either read from
  a node list file or from `TRACE_NODE_SHAPES` (the same list, counted).
- Developer pods: shapes from a pod list file or from `TRACE_POD_SHAPES`; run times from the file (deletion minus
  scheduled time) or a log-normal fitted to the shipped default pod list, both clipped to 1 minute .. 24 hours.
  GPU sharing is rounded up: a pod asking for part of one GPU holds the whole GPU (a network task cannot use the
  rest of a shared GPU, so the remainder would be stranded either way).
- Asks, bids and network revenue are per GPU-hour in USD (`ASK_PER_GPU_HOUR`, `NETWORK_REVENUE_PER_GPU_HOUR`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ceti.fabric.model import Demand, Node, shared_gpus

# (region, share of providers, price factor on the ask)
REGIONS: tuple[tuple[str, float, float], ...] = (
    ("us-east", 0.25, 1.00),
    ("us-west", 0.15, 1.05),
    ("eu-west", 0.20, 1.10),
    ("eu-central", 0.15, 1.05),
    ("ap-southeast", 0.15, 0.90),
    ("sa-east", 0.10, 0.85),
)

# Typical provider ask per GPU-hour on open GPU marketplaces for these classes of card (G2/G3 are Alibaba's
# undisclosed codes: priced here like a current mid-range and a high-end data-centre card). Each node's ask is
# this x its region's factor x a uniform draw in [0.85, 1.15].
ASK_PER_GPU_HOUR: dict[str, float] = {
    "T4": 0.12,
    "P100": 0.14,
    "V100M16": 0.22,
    "V100M32": 0.28,
    "A10": 0.30,
    "G2": 0.35,
    "G3": 0.55,
}

# Synthetic revenue per GPU-hour of back-fill work for each network, shaped like the adapters' estimates:
# Bittensor pays most on large cards (compute subnets), Render by OctaneBench score (older cards earn little),
# Akash leases track marketplace rents. Figures are illustrative, not quotes.
NETWORK_REVENUE_PER_GPU_HOUR: dict[str, dict[str, float]] = {
    "bittensor": {"T4": 0.10, "P100": 0.12, "V100M16": 0.28, "V100M32": 0.36, "A10": 0.36, "G2": 0.46, "G3": 0.74},
    "render": {"T4": 0.16, "P100": 0.15, "V100M16": 0.27, "V100M32": 0.31, "A10": 0.40, "G2": 0.44, "G3": 0.66},
    "akash": {"T4": 0.15, "P100": 0.19, "V100M16": 0.30, "V100M32": 0.38, "A10": 0.37, "G2": 0.47, "G3": 0.70},
}
# How many GPUs each network can use at once, as a share of the fleet's GPUs (together more than the fleet:
# the networks' demand is never the limit, only their per-model prices are)
NETWORK_CAPACITY_SHARE: dict[str, float] = {"bittensor": 0.35, "render": 0.45, "akash": 0.40}
NETWORK_TASK_CPU_MILLI = 1000
NETWORK_TASK_MEMORY_MIB = 4096
NETWORK_LEASE_MEAN_H = 6.0  # a network task (miner session, lease, render batch) ends after an exponential time
NETWORK_LOST_H = 5 / 60  # work a network task loses when stopped (one frame, one request window)

# Node shapes of the trace's GPU node list: (model, GPUs, milli-CPU, memory MiB, nodes)
TRACE_NODE_SHAPES: tuple[tuple[str, int, int, int, int], ...] = (
    ("G2", 8, 96000, 393216, 549),
    ("T4", 2, 104000, 524288, 387),
    ("P100", 2, 16000, 122880, 107),
    ("G3", 8, 128000, 786432, 39),
    ("V100M16", 4, 32000, 131072, 28),
    ("P100", 2, 64000, 262144, 22),
    ("V100M32", 8, 96000, 786432, 21),
    ("V100M16", 1, 8000, 32768, 19),
    ("T4", 4, 96000, 393216, 17),
    ("V100M32", 4, 48000, 376832, 9),
    ("V100M16", 8, 64000, 262144, 7),
    ("P100", 1, 8000, 61440, 3),
    ("A10", 1, 128000, 1048576, 2),
    ("P100", 2, 8000, 61440, 2),
    ("V100M16", 8, 82000, 344064, 1),
)
# GPU pod shapes of the trace's default pod list: (GPUs, milli-CPU, memory MiB, share of pods)
TRACE_POD_SHAPES: tuple[tuple[int, int, int, float], ...] = (
    (1, 3152, 5600, 0.10),
    (1, 4000, 10600, 0.15),
    (1, 8000, 24576, 0.15),
    (1, 11300, 31250, 0.20),
    (1, 11908, 49152, 0.20),
    (1, 15700, 58368, 0.10),
    (1, 24200, 125952, 0.0889),
    (2, 16200, 66560, 0.0023),
    (4, 32200, 132096, 0.0021),
    (8, 88000, 327680, 0.0067),
)
TRACE_RUNTIME_LOG_MEAN_H = -1.61  # ln(hours) of the default pod list's run times (clipped to 1 min .. 24 h)
TRACE_RUNTIME_LOG_STD = 1.75
MIN_RUNTIME_H = 1 / 60
MAX_RUNTIME_H = 24.0

# Developer jobs
PRIORITY_CLASSES: tuple[tuple[str, int, bool, float], ...] = (
    # (name, priority, interruptible, share of jobs)
    ("high", 70, False, 0.15),
    ("normal", 50, False, 0.65),
    ("spot", 30, True, 0.20),
)
NETWORK_PRIORITY = 10  # below every developer class: developer work always displaces it
GANG_SHARE = 0.05  # jobs that run as a gang of 2-4 tasks of the pod's shape
REGION_PINNED_SHARE = 0.15  # jobs that must run in their home region (data residency)
BID_MARGIN = (0.2, 1.5)  # bid = ask of a reference model x (1 + margin), margin uniform in this range
CHECKPOINT_H = 0.5  # developer jobs checkpoint every half hour: a stop loses the work since the last one

# Providers
MEAN_UP_H_MEDIAN = 72.0  # per node: mean hours between failures, log-normal around this
MEAN_UP_H_SIGMA = 1.0
MEAN_DOWN_H = 1.0  # mean hours a failed node stays down
JOIN_SHARE = 0.05  # nodes that join during the run
LEAVE_SHARE = 0.05  # nodes that leave for good during the run (abruptly: their work is lost and retried)


class NetworkSimError(ValueError):
    """Bad arguments or inputs for the network simulation; the message is one line."""


@dataclass(frozen=True, slots=True)
class NodeShape:
    model: str
    gpus: int
    cpu_milli: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class PodShape:
    gpus: int  # whole GPUs (a share of one GPU is rounded up to one)
    cpu_milli: int
    memory_mib: int


@dataclass(slots=True)
class SimNode:
    index: int
    node: Node  # schedulable version
    model: str
    gpus: int
    mean_up_h: float
    # (start s, end s) intervals when the node is up, sorted; the node is down or absent outside them
    up: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DevJob:
    id: str
    order: int
    arrival_s: float
    demand: Demand
    gang_size: int
    run_s: float
    bid_per_hour: float  # the whole job (all tasks, all GPUs)
    priority: int
    priority_class: str
    interruptible: bool

    @property
    def gpus(self) -> int:
        return self.demand.gpu_count * self.gang_size

    @property
    def value_per_gpu_hour(self) -> float:
        return self.bid_per_hour / max(self.gpus, 1)


@dataclass(slots=True)
class World:
    nodes: list[SimNode]
    jobs: list[DevJob]
    horizon_s: float
    network_capacity_gpus: dict[str, int]
    arrival_rate_per_h: float
    load: float
    source: str  # where the shapes came from

    @property
    def total_gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def models(self) -> list[str]:
        return sorted({n.model for n in self.nodes})


def shapes_from_trace(nodes_csv: Path | None, pods_csv: Path | None) -> tuple[
    list[tuple[NodeShape, float]], list[tuple[PodShape, float]], np.ndarray | None, str
]:
    """Node and pod shapes with weights, and run times in hours (None: use the fitted log-normal)."""
    from ceti.sim.trace import TraceError, load_nodes, load_pods

    source = []
    if nodes_csv is not None:
        try:
            rows = load_nodes(nodes_csv, on_error="skip").rows
        except TraceError as exc:
            raise NetworkSimError(str(exc)) from None
        count: dict[NodeShape, int] = {}
        for r in rows:
            if r.gpu_count > 0 and r.gpu_model in ASK_PER_GPU_HOUR:
                s = NodeShape(r.gpu_model, r.gpu_count, r.cpu_milli, r.memory_mib)
                count[s] = count.get(s, 0) + 1
        if not count:
            raise NetworkSimError(f"{nodes_csv}: no GPU node with a known GPU model ({', '.join(ASK_PER_GPU_HOUR)})")
        node_shapes = [(s, float(c)) for s, c in sorted(count.items(), key=lambda x: (-x[1], x[0].model, x[0].gpus))]
        source.append(f"nodes: {nodes_csv.name}")
    else:
        node_shapes = [(NodeShape(m, g, c, mem), float(n)) for m, g, c, mem, n in TRACE_NODE_SHAPES]
        source.append("nodes: built-in trace mix")
    runtimes = None
    if pods_csv is not None:
        try:
            pods = load_pods(pods_csv, on_error="skip").rows
        except TraceError as exc:
            raise NetworkSimError(str(exc)) from None
        pcount: dict[PodShape, int] = {}
        times = []
        for p in pods:
            if p.gpu_count <= 0:
                continue
            s = PodShape(p.gpu_count, p.cpu_milli, p.memory_mib)
            pcount[s] = pcount.get(s, 0) + 1
            if p.deletion_time is not None:
                start = p.scheduled_time if p.scheduled_time is not None else p.creation_time
                if start is not None:
                    times.append((p.deletion_time - start) / 3600)
        if not pcount:
            raise NetworkSimError(f"{pods_csv}: no pod asks for a GPU")
        pod_shapes = [(s, float(c)) for s, c in sorted(pcount.items(), key=lambda x: (x[0].gpus, x[0].cpu_milli,
                                                                                          x[0].memory_mib))]
        if times:
            runtimes = np.clip(np.asarray(times, dtype=float), MIN_RUNTIME_H, MAX_RUNTIME_H)
        source.append(f"pods: {pods_csv.name}")
    else:
        pod_shapes = [(PodShape(g, c, m), w) for g, c, m, w in TRACE_POD_SHAPES]
        source.append("pods: built-in trace mix")
    return node_shapes, pod_shapes, runtimes, "; ".join(source)


def _pick(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


def _up_intervals(rng: np.random.Generator, mean_up_h: float, horizon_s: float, joins: float | None,
                  leaves: float | None) -> list[tuple[float, float]]:
    """Alternating exponential up and down times; a node starts up with its steady-state probability."""
    up_s, down_s = mean_up_h * 3600, MEAN_DOWN_H * 3600
    end = horizon_s if leaves is None else leaves
    t = 0.0 if joins is None else joins
    is_up = joins is not None or rng.random() < up_s / (up_s + down_s)
    out = []
    while t < end:
        span = rng.exponential(up_s if is_up else down_s)
        if is_up:
            out.append((t, min(t + span, end)))
        t += span
        is_up = not is_up
    return out


def build_world(
    *,
    nodes: int = 500,
    hours: float = 48.0,
    seed: int = 1,
    load: float = 0.7,
    nodes_csv: Path | None = None,
    pods_csv: Path | None = None,
) -> World:
    """Draw the providers, their up times and the developer jobs for one seed."""
    if nodes < 1:
        raise NetworkSimError(f"--nodes must be at least 1, not {nodes}")
    if not 0 < hours <= 24 * 30:
        raise NetworkSimError(f"--hours must be in (0, 720], not {hours:g}")
    if not 0 < load <= 5:
        raise NetworkSimError(f"--load must be in (0, 5] (developer GPU demand as a share of the fleet), not {load:g}")
    node_shapes, pod_shapes, runtimes, source = shapes_from_trace(nodes_csv, pods_csv)
    rng = np.random.default_rng([seed, 2023])
    horizon_s = hours * 3600
    region_names = [r[0] for r in REGIONS]
    region_factor = {r[0]: r[2] for r in REGIONS}
    picks = _pick(rng, [w for _, w in node_shapes], nodes)
    regions = _pick(rng, [r[1] for r in REGIONS], nodes)
    ask_draw = rng.uniform(0.85, 1.15, nodes)
    mean_up = np.exp(rng.normal(np.log(MEAN_UP_H_MEDIAN), MEAN_UP_H_SIGMA, nodes))
    role = rng.random(nodes)
    moment = rng.uniform(0.05, 0.95, nodes) * horizon_s
    sim_nodes = []
    for i in range(nodes):
        s = node_shapes[int(picks[i])][0]
        region = region_names[int(regions[i])]
        ask = round(ASK_PER_GPU_HOUR[s.model] * region_factor[region] * float(ask_draw[i]), 4)
        up_h = float(mean_up[i])
        joins = float(moment[i]) if role[i] < JOIN_SHARE else None
        leaves = float(moment[i]) if JOIN_SHARE <= role[i] < JOIN_SHARE + LEAVE_SHARE else None
        node = Node(
            id=f"n{i:05d}",
            cpu_milli=s.cpu_milli,
            memory_mib=s.memory_mib,
            gpus=shared_gpus((g, s.model, 0) for g in range(s.gpus)),
            region=region,
            price_per_gpu_hour=ask,
            reliability=round(up_h / (up_h + MEAN_DOWN_H), 4),
        )
        sim_nodes.append(SimNode(i, node, s.model, s.gpus, up_h, _up_intervals(rng, up_h, horizon_s, joins, leaves)))

    # developer jobs: Poisson arrivals at the rate that makes their GPU demand `load` x the fleet's GPUs
    pod_w = np.asarray([w for _, w in pod_shapes], dtype=float)
    pod_w /= pod_w.sum()
    mean_gpus_task = float(sum(w * s.gpus for (s, _), w in zip(pod_shapes, pod_w, strict=True)))
    mean_gang = 1 + GANG_SHARE * 2.0  # gangs of 2-4: +2 tasks on average
    if runtimes is not None:
        mean_run_h = float(runtimes.mean())
    else:
        mean_run_h = _lognormal_clipped_mean(rng)
    total_gpus = sum(n.gpus for n in sim_nodes)
    rate_per_h = load * total_gpus / max(mean_gpus_task * mean_gang * mean_run_h, 1e-9)
    n_expected = rate_per_h * hours
    gaps = rng.exponential(3600 / rate_per_h, int(n_expected * 1.2 + 50))
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < horizon_s]
    n = len(arrivals)
    shape_i = rng.choice(len(pod_shapes), size=n, p=pod_w)
    if runtimes is not None:
        run_h = runtimes[rng.integers(0, len(runtimes), n)]
    else:
        run_h = np.clip(np.exp(rng.normal(TRACE_RUNTIME_LOG_MEAN_H, TRACE_RUNTIME_LOG_STD, n)), MIN_RUNTIME_H,
                        MAX_RUNTIME_H)
    gang = np.where(rng.random(n) < GANG_SHARE, rng.integers(2, 5, n), 1)
    cls_i = _pick(rng, [c[3] for c in PRIORITY_CLASSES], n)
    pinned = rng.random(n) < REGION_PINNED_SHARE
    home = _pick(rng, [r[1] for r in REGIONS], n)
    # the reference model a developer prices against, drawn by the fleet's GPU share
    models = sorted(ASK_PER_GPU_HOUR)
    fleet = [sum(x.gpus for x in sim_nodes if x.model == m) for m in models]
    ref = _pick(rng, [f + 1e-9 for f in fleet], n)
    margin = rng.uniform(*BID_MARGIN, n)
    jobs = []
    for j in range(n):
        s = pod_shapes[int(shape_i[j])][0]
        name, prio, interruptible, _ = PRIORITY_CLASSES[int(cls_i[j])]
        g = int(gang[j])
        d = Demand(
            cpu_milli=s.cpu_milli,
            memory_mib=s.memory_mib,
            gpu_count=s.gpus,
            regions=frozenset({region_names[int(home[j])]}) if pinned[j] else frozenset(),
        )
        bid = ASK_PER_GPU_HOUR[models[int(ref[j])]] * max(region_factor.values()) * 1.15 * (1 + float(margin[j]))
        jobs.append(
            DevJob(
                id=f"d{j:06d}",
                order=j,
                arrival_s=float(arrivals[j]),
                demand=d,
                gang_size=g,
                run_s=max(float(run_h[j]) * 3600, 1.0),
                bid_per_hour=round(bid * s.gpus * g, 4),
                priority=prio,
                priority_class=name,
                interruptible=interruptible,
            )
        )
    capacity = {k: round(v * total_gpus) for k, v in NETWORK_CAPACITY_SHARE.items()}
    return World(sim_nodes, jobs, horizon_s, capacity, rate_per_h, load, source)


def _lognormal_clipped_mean(rng: np.random.Generator) -> float:
    # a fixed sample of its own, so the estimate does not move the main stream of draws
    r = np.random.default_rng(7)
    x = np.exp(r.normal(TRACE_RUNTIME_LOG_MEAN_H, TRACE_RUNTIME_LOG_STD, 200_000))
    return float(np.clip(x, MIN_RUNTIME_H, MAX_RUNTIME_H).mean())
