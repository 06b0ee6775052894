"""`ceti bench fabric`: one scheduling round at scale, ours against a per-job first-fit scan.

The synthetic snapshot is seeded and drawn from the Alibaba GPU trace (openb, 2023): node shapes (GPU model
and count, CPU, memory) from its node list, job shapes (CPU, memory, GPU count and share, GPU-type
constraints) from its pod list. On top: regions, asks, reliability, running work that fills the nodes to
30-95 %, priorities, bids, gangs and speed profiles.
"""

from __future__ import annotations

import csv
import gc
import json
import os
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ceti.fabric.baseline_scan import schedule_first_fit
from ceti.fabric.decisions import Decisions
from ceti.fabric.model import GPU, Allocation, Demand, Job, Node, Snapshot
from ceti.fabric.per_task import fits_round, placement_names
from ceti.fabric.schedule import schedule
from ceti.fabric.warm import warm_up

app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@app.callback()
def _bench() -> None:
    """Benchmarks of the fabric and friends."""


# the team's data sets sit beside the repository (../shared/data); CETI_TRACE_DIR points elsewhere
_BESIDE_REPO = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "alibaba-openb-2023"
TRACE_DIR = Path(os.environ.get("CETI_TRACE_DIR", str(_BESIDE_REPO)))
BASELINE_MEMORY_JOBS = 2_000  # jobs of the first-fit scan run under tracemalloc for its peak memory
REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-east", "sa-east", "me-central")
GPU_PRICE = {"V100M16": 1.10, "V100M32": 1.50, "P100": 0.80, "T4": 0.35, "A10": 0.75, "G2": 1.00, "G3": 2.20}
GPU_VRAM_GIB = {"V100M16": 16, "V100M32": 32, "P100": 16, "T4": 16, "A10": 24, "G2": 32, "G3": 80}
SPEED_PROFILES = (
    {"V100M32": 1.6, "V100M16": 1.5, "G3": 2.5, "G2": 1.3, "T4": 0.6, "P100": 0.8},
    {"T4": 1.2, "A10": 1.4, "P100": 0.7},
    {"G3": 3.0, "G2": 1.5, "V100M32": 1.2},
)

# (count, gpus, model, cpu_milli, memory_mib): the trace's GPU nodes with 2+ GPUs, used if the CSV is absent
_NODES_FALLBACK = [
    (131, 2, "P100", 64000, 262144),
    (387, 2, "T4", 104000, 524288),
    (17, 4, "T4", 96000, 393216),
    (28, 4, "V100M16", 96000, 393216),
    (9, 4, "V100M32", 96000, 393216),
    (549, 8, "G2", 96000, 393216),
    (39, 8, "G3", 128000, 786432),
    (8, 8, "V100M16", 96000, 786432),
    (21, 8, "V100M32", 96000, 786432),
]
# (count, num_gpu, gpu_milli, cpu_milli, memory_mib, gpu_spec)
_PODS_FALLBACK = [
    (3911, 1, 1000, 12000, 24576, ""),
    (1088, 0, 0, 8000, 30517, ""),
    (1078, 1, 810, 6000, 12288, ""),
    (750, 1, 470, 6000, 12288, ""),
    (328, 1, 320, 4000, 8192, ""),
    (253, 1, 650, 8000, 16384, ""),
    (140, 1, 230, 4000, 8192, ""),
    (128, 1, 460, 6000, 12288, ""),
    (44, 8, 1000, 64000, 262144, ""),
    (16, 2, 1000, 24000, 65536, ""),
    (15, 4, 1000, 32000, 131072, ""),
    (300, 1, 1000, 8000, 16384, "T4"),
    (100, 1, 1000, 12000, 32768, "V100M16|V100M32"),
]


def _trace_nodes() -> list[tuple[int, str, int, int]]:
    path = TRACE_DIR / "openb_node_list_gpu_node.csv"
    if path.exists():
        with path.open() as f:
            rows = [
                (int(r["gpu"]), r["model"], int(r["cpu_milli"]), int(r["memory_mib"]))
                for r in csv.DictReader(f)
            ]
        rows = [r for r in rows if 2 <= r[0] <= 8]
        if rows:
            return rows
    return [(g, m, c, mem) for n, g, m, c, mem in _NODES_FALLBACK for _ in range(n)]


def _trace_pods() -> list[tuple[int, int, int, int, str]]:
    path = TRACE_DIR / "openb_pod_list_gpuspec33.csv"
    if path.exists():
        with path.open() as f:
            rows = [
                (
                    int(r["num_gpu"]),
                    int(r["gpu_milli"]),
                    int(r["cpu_milli"]),
                    int(r["memory_mib"]),
                    r["gpu_spec"] or "",
                )
                for r in csv.DictReader(f)
            ]
        rows = [r for r in rows if r[0] <= 8]
        if rows:
            return rows
    return [(g, m, c, mem, s) for n, g, m, c, mem, s in _PODS_FALLBACK for _ in range(n)]


def synthetic_snapshot(
    n_nodes: int, n_jobs: int, seed: int = 0, load: tuple[float, float] = (0.3, 0.95)
) -> Snapshot:
    """A seeded, heterogeneous snapshot: busy nodes, a backlog of pending jobs."""
    rng = np.random.default_rng(seed)
    shapes = _trace_nodes()
    pick = rng.integers(0, len(shapes), n_nodes)
    region = rng.choice(len(REGIONS), n_nodes, p=[0.22, 0.14, 0.16, 0.12, 0.1, 0.1, 0.08, 0.08])
    factor = np.round(np.exp(rng.normal(0.0, 0.25, n_nodes)), 2)
    cpu_price = np.round(rng.uniform(0.01, 0.03, n_nodes), 3)
    reliability = np.round(1.0 - rng.beta(1.0, 30.0, n_nodes), 3)
    drain = rng.random(n_nodes) < 0.02
    util = rng.uniform(load[0], load[1], n_nodes)
    share = rng.integers(2, 8, n_nodes) * 100
    interruptible = rng.random(n_nodes) < 0.4
    lost = np.round(rng.uniform(0.0, 3.0, n_nodes), 2)
    nodes: list[Node] = []
    running: list[Allocation] = []
    gpu_cache: dict[tuple[str, int], tuple[GPU, ...]] = {}
    for i in range(n_nodes):
        g, model, cpu, mem = shapes[int(pick[i])]
        key = (model, g)
        gpus = gpu_cache.get(key)
        if gpus is None:
            gpus = gpu_cache[key] = tuple(GPU(k, model, GPU_VRAM_GIB.get(model, 16) * 1024) for k in range(g))
        nid = f"node-{i:06d}"
        price = round(GPU_PRICE.get(model, 1.0) * float(factor[i]), 2)
        nodes.append(
            Node(
                nid,
                cpu,
                mem,
                gpus,
                REGIONS[int(region[i])],
                0,
                price,
                float(cpu_price[i]),
                float(reliability[i]),
                not bool(drain[i]),
            )
        )
        busy = int(util[i] * g)
        if busy:
            prio = 10 if interruptible[i] else 50
            running.append(
                Allocation(
                    f"alloc-{i:06d}-a",
                    f"run-{i:06d}-a",
                    nid,
                    int(cpu * util[i] * 0.8),
                    int(mem * util[i] * 0.8),
                    tuple(range(busy)),
                    0,
                    prio,
                    bool(interruptible[i]),
                    price * busy * 1.2,
                    float(lost[i]),
                )
            )
        if busy < g and rng.random() < 0.5:
            running.append(
                Allocation(
                    f"alloc-{i:06d}-b",
                    f"run-{i:06d}-b",
                    nid,
                    2000,
                    4096,
                    (busy,),
                    int(share[i]),
                    10,
                    True,
                    price * 0.5,
                    float(lost[i]) / 2,
                )
            )
    pods = _trace_pods()
    pod = rng.integers(0, len(pods), n_jobs)
    prio = rng.choice([10, 50, 90], n_jobs, p=[0.2, 0.7, 0.1])
    has_region = rng.random(n_jobs) < 0.1
    job_region = rng.integers(0, len(REGIONS), n_jobs)
    has_bid = rng.random(n_jobs) < 0.3
    bid_tier = rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], n_jobs)  # users bid round numbers per GPU-hour
    gang = np.where(rng.random(n_jobs) < 0.02, rng.integers(2, 5, n_jobs), 1)
    speed = rng.integers(0, len(SPEED_PROFILES) * 3, n_jobs)
    retried = rng.random(n_jobs) < 0.03
    order = np.arange(n_jobs) + 1000
    order[retried] = rng.integers(0, 1000, int(retried.sum()))
    jobs: list[Job] = []
    for k in range(n_jobs):
        g, milli, cpu, mem, spec = pods[int(pod[k])]
        models = frozenset(spec.split("|")) if spec else frozenset()
        regions = frozenset({REGIONS[int(job_region[k])]}) if has_region[k] else frozenset()
        d = Demand(cpu, mem, g, milli if g == 1 and 0 < milli < 1000 else 0, models, 0, 0, regions)
        bid = None
        if has_bid[k]:
            per_gpu = float(bid_tier[k])
            bid = round((g * per_gpu + cpu / 1000.0 * 0.02 * per_gpu) * int(gang[k]), 2)
        sp = SPEED_PROFILES[int(speed[k])] if g and speed[k] < len(SPEED_PROFILES) else {}
        jobs.append(
            Job(f"job-{k:06d}", d, int(order[k]), int(prio[k]), int(gang[k]), bid, bool(prio[k] == 10), sp)
        )
    return Snapshot(tuple(nodes), tuple(running), tuple(jobs), now=0.0)


def _placed(decisions: Decisions) -> int:
    return len({s.job_id for s in decisions.starts})


def profile_round(snap: Snapshot, placement: str, top: int) -> list[dict[str, object]]:
    """One more round under cProfile: the `top` functions of the scheduling core by cumulative time (the
    profiler's own cost inflates the Python-heavy ones; read the shares, not the seconds)."""
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    schedule(snap, placement)
    prof.disable()
    core = str(Path(schedule.__code__.co_filename).parent)
    rows = []
    for entry in prof.getstats():
        code = entry.code
        if isinstance(code, str):  # a built-in: only the flow's solver is the core's
            if "min_cost_flow" not in code:
                continue
            name = "OR-Tools SimpleMinCostFlow.solve"
        elif code.co_filename.startswith(core):
            name = f"{Path(code.co_filename).stem}.{code.co_qualname}"
        else:
            continue
        rows.append(
            {
                "function": name,
                "calls": entry.callcount,
                "cumulative_s": round(entry.totaltime, 4),
                "own_s": round(entry.inlinetime, 4),
            }
        )
    rows.sort(key=lambda r: -r["cumulative_s"])  # type: ignore[operator]
    return rows[:top]


def run_bench(
    nodes: int,
    jobs: int,
    rounds: int,
    seed: int,
    baseline_budget_s: float,
    progress: bool,
    placement: str = "fabric",
    profile_top: int = 0,
) -> dict[str, object]:
    console = Console(stderr=True)
    status = console.status("building the synthetic snapshot ...") if progress else None
    if status:
        status.start()
    try:
        t0 = time.perf_counter()
        snap = synthetic_snapshot(nodes, jobs, seed)
        build_s = time.perf_counter() - t0
        warm_s = warm_up()  # the compiled kernels loaded, as the server's scheduler does when it starts
        lat: list[float] = []
        cpu_lat: list[float] = []
        decisions = None
        for r in range(rounds):
            if status:
                status.update(f"ours: round {r + 1}/{rounds} ...")
            # the last round's decisions are freed before the clock starts, not inside this round
            decisions = None
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            decisions = schedule(snap, placement)
            lat.append(time.perf_counter() - t0)
            cpu_lat.append(time.process_time() - c0)
        assert decisions is not None
        if status:
            status.update("ours: one more round under tracemalloc for peak memory ...")
        gc.collect()
        tracemalloc.start()
        schedule(snap, placement)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        profile = None
        if profile_top:
            if status:
                status.update("ours: one more round under the profiler ...")
            gc.collect()
            profile = profile_round(snap, placement, profile_top)
        # baseline: the whole queue if it fits the budget, else a growing prefix, extrapolated per job
        queue_len = len(snap.pending)
        prefix = min(queue_len, 250)
        base_lat: list[float] = []
        base_dec = None
        while True:
            if status:
                status.update(f"baseline first-fit scan: {prefix} of {queue_len} jobs ...")
            gc.collect()
            t0 = time.perf_counter()
            base_dec = schedule_first_fit(snap, max_jobs=prefix)
            el = time.perf_counter() - t0
            if prefix >= queue_len or el * 2.2 > baseline_budget_s:
                base_lat.append(el)
                break
            prefix = min(queue_len, prefix * 2)
        full = prefix >= queue_len
        if full:
            for r in range(rounds - 1):
                if status:
                    status.update(f"baseline first-fit scan: round {r + 2}/{rounds} ...")
                t0 = time.perf_counter()
                schedule_first_fit(snap)
                base_lat.append(time.perf_counter() - t0)
        per_job = statistics.median(base_lat) / max(prefix, 1)
        base_est = statistics.median(base_lat) if full else per_job * queue_len
        # the scan's memory is its per-node free state, built before the first job: a short prefix shows the
        # peak (tracing slows the scan several times over, so not the whole timed prefix)
        mem_jobs = min(prefix, BASELINE_MEMORY_JOBS)
        if status:
            status.update(f"baseline first-fit scan: {mem_jobs} jobs under tracemalloc for peak memory ...")
        gc.collect()
        tracemalloc.start()
        schedule_first_fit(snap, max_jobs=mem_jobs)
        _, base_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        if status:
            status.stop()
    med = statistics.median(lat)
    queue = sorted(snap.pending, key=lambda j: (-j.priority, j.order, j.id))[:prefix]
    started = {s.job_id for s in decisions.starts}
    tasks = sum(max(1, j.gang_size) for j in snap.pending)
    max_gpus = max((len(n.gpus) for n in snap.nodes), default=0)
    return {
        "nodes": nodes,
        "jobs": jobs,
        "placement": placement,
        # what placed the round: per task by the placement policy, or the class flow (above its size bounds)
        "placed_by": "per task"
        if placement != "flow" and fits_round(len(snap.nodes), tasks, max_gpus)
        else "flow",
        "running": len(snap.running),
        "rounds": rounds,
        "seed": seed,
        "snapshot_build_s": round(build_s, 3),
        "kernels_warm_s": round(warm_s, 3),
        "ours_median_s": round(med, 4),
        "ours_max_s": round(max(lat), 4),
        "ours_latencies_s": [round(x, 4) for x in lat],
        "ours_cpu_median_s": round(statistics.median(cpu_lat), 4),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "ours_peak_traced_mib": round(peak / 2**20, 1),
        "baseline_peak_traced_mib": round(base_peak / 2**20, 1),
        "baseline_memory_jobs": mem_jobs,
        "memory_ratio": round(peak / base_peak, 2) if base_peak else None,
        "process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ours_placed_jobs": len(started),
        "ours_starts": len(decisions.starts),
        "ours_preemptions": len(decisions.preemptions),
        "ours_waiting": len(decisions.waiting),
        "ours_unschedulable": len(decisions.unschedulable),
        "baseline_jobs_timed": prefix,
        "baseline_full_queue": full,
        "baseline_round_s": round(statistics.median(base_lat), 4),
        "baseline_per_job_ms": round(per_job * 1000, 4),
        "baseline_est_full_round_s": round(base_est, 3),
        "baseline_placed_in_prefix": _placed(base_dec),
        "ours_placed_in_same_prefix": sum(1 for j in queue if j.id in started),
        "speedup": round(base_est / med, 1) if med > 0 else None,
        "profile_top": profile,
        "note": (
            "baseline timed on the whole queue"
            if full
            else f"baseline timed on the first {prefix} jobs of the queue and extrapolated per job to "
            f"{queue_len}; later jobs scan past more full nodes, so this understates the baseline"
        ),
    }


@app.command()
def fabric(
    nodes: int = typer.Option(100_000, help="Nodes in the synthetic snapshot."),
    jobs: int = typer.Option(100_000, help="Pending jobs in the synthetic snapshot."),
    rounds: int = typer.Option(5, min=1, help="Scheduling rounds to time."),
    seed: int = typer.Option(0, help="Seed of the synthetic snapshot."),
    baseline_budget: float = typer.Option(
        20.0, help="Seconds the first-fit baseline may take before it is extrapolated."
    ),
    placement: str = typer.Option(
        "fabric",
        help="As the server's CETI_PLACEMENT: a placement policy per task where the round is small enough "
        "(fabric, fgd, ...), else the class flow; or flow.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    profile: int = typer.Option(
        0,
        "--profile",
        min=0,
        help="Also run one round under cProfile and show the scheduling core's N functions with the most "
        "cumulative time (the profiler inflates Python code: read the shares).",
    ),
) -> None:
    """Time `fabric.schedule` on a synthetic snapshot against a per-job first-fit scan."""
    if placement not in placement_names():
        typer.echo(
            f"error: unknown --placement {placement!r}; known: {', '.join(placement_names())}", err=True
        )
        raise typer.Exit(2)
    res = run_bench(
        nodes,
        jobs,
        rounds,
        seed,
        baseline_budget,
        progress=not as_json,
        placement=placement,
        profile_top=profile,
    )
    if as_json:
        typer.echo(json.dumps(res))
        return
    t = Table(
        title=f"fabric: {nodes:,} nodes x {jobs:,} pending jobs ({res['running']:,} running), {rounds} rounds, "
        f"placed by {res['placed_by']}"
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    for label, key in (
        ("ours: median round (s)", "ours_median_s"),
        ("ours: max round (s)", "ours_max_s"),
        ("ours: median round, CPU time (s)", "ours_cpu_median_s"),
        ("load average (1 min)", "load_average_1m"),
        ("ours: peak traced memory (MiB)", "ours_peak_traced_mib"),
        ("baseline: peak traced memory (MiB)", "baseline_peak_traced_mib"),
        ("memory, ours / baseline", "memory_ratio"),
        ("process max RSS (MiB)", "process_max_rss_mib"),
        ("ours: jobs placed", "ours_placed_jobs"),
        ("ours: pre-emptions", "ours_preemptions"),
        ("ours: waiting", "ours_waiting"),
        ("ours: unschedulable", "ours_unschedulable"),
        ("baseline: jobs timed", "baseline_jobs_timed"),
        ("baseline: per job (ms)", "baseline_per_job_ms"),
        ("baseline: est. full round (s)", "baseline_est_full_round_s"),
        ("baseline: placed in timed prefix", "baseline_placed_in_prefix"),
        ("ours: placed in the same prefix", "ours_placed_in_same_prefix"),
        ("speed-up (x)", "speedup"),
    ):
        t.add_row(label, str(res[key]))
    console = Console()
    console.print(t)
    console.print(f"[dim]{res['note']}[/dim]")
    if res["profile_top"]:
        top = res["profile_top"]
        whole = max((r["cumulative_s"] for r in top), default=0.0)  # type: ignore[type-var]
        p = Table(title="one round under the profiler: the scheduling core's functions by cumulative time")
        p.add_column("function", overflow="fold", min_width=36)
        for col in ("calls", "cumulative s", "share", "own s"):
            p.add_column(col, justify="right")
        for r in top:  # type: ignore[union-attr]
            share = f"{r['cumulative_s'] / whole:.0%}" if whole else "-"
            p.add_row(
                str(r["function"]), str(r["calls"]), f"{r['cumulative_s']:.3f}", share, f"{r['own_s']:.3f}"
            )
        console.print(p)
