"""`ceti sim network`: developer jobs and network back-fill on a synthetic provider network."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_PROCESSES = min(2, os.cpu_count() or 1)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def network(
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Simulate a synthetic provider network (the only mode so far).")
    ] = False,
    nodes: Annotated[int, typer.Option("--nodes", help="Provider nodes.")] = 500,
    hours: Annotated[float, typer.Option("--hours", help="Simulated hours.")] = 12.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world (nodes, failures, arrivals).")] = 1,
    round_s: Annotated[float, typer.Option("--round-s", help="Seconds of simulated time between rounds.")] = 60.0,
    network_demand: Annotated[
        str, typer.Option("--network-demand", help="on: networks back-fill idle GPUs; off: no network work.")
    ] = "on",
    load: Annotated[
        float, typer.Option("--load", help="Developer GPU demand as a share of the fleet's GPUs.")
    ] = 0.7,
    trace_nodes: Annotated[
        Path | None, typer.Option("--trace-nodes", help="Draw node shapes from this trace node list CSV.")
    ] = None,
    trace_pods: Annotated[
        Path | None, typer.Option("--trace-pods", help="Draw pod shapes and run times from this pod list CSV.")
    ] = None,
    processes: Annotated[
        int, typer.Option("--processes", help="Policies simulated side by side (worker processes).")
    ] = DEFAULT_PROCESSES,
    no_bound: Annotated[bool, typer.Option("--no-bound", help="Skip the LP upper bound.")] = False,
    placement: Annotated[
        str,
        typer.Option(
            "--placement",
            help="How the fabric's rounds pick nodes, as the server's CETI_PLACEMENT: a placement policy "
            "(fabric, fgd, ...) on rounds small enough, or flow.",
        ),
    ] = "fabric",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write a markdown report, JSON and a PNG plot here.")
    ] = None,
) -> None:
    """Developer jobs and network back-fill on a synthetic global provider network: value against an LP bound,
    idle GPU-hours, time-to-start, pre-emptions and work lost to failures, per policy in one run."""
    from ceti.sim.network import policies_for
    from ceti.sim.network_world import NetworkSimError, build_world

    if not synthetic:
        raise _fail("only synthetic networks can be simulated so far: pass --synthetic")
    if network_demand not in ("on", "off"):
        raise _fail(f"--network-demand must be on or off, not {network_demand!r}")
    if not round_s > 0:
        raise _fail(f"--round-s must be above 0, not {round_s:g}")
    if hours > 0 and round_s > hours * 3600:
        raise _fail(f"--round-s ({round_s:g}) is longer than the simulated time ({hours:g} h)")
    if processes < 1:
        raise _fail(f"--processes must be at least 1, not {processes}")
    demand = network_demand == "on"
    from ceti.fabric.per_task import placement_names

    if placement not in placement_names():
        raise _fail(f"unknown --placement {placement!r}; known: {', '.join(placement_names())}")
    try:
        world = build_world(nodes=nodes, hours=hours, seed=seed, load=load, nodes_csv=trace_nodes,
                            pods_csv=trace_pods)
    except NetworkSimError as exc:
        raise _fail(str(exc)) from None
    err = Console(stderr=True)
    plan = policies_for(demand)
    rounds = int(-(-world.horizon_s // round_s)) + 1
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:
        results = _run_all(world, plan, round_s, seed, not no_bound, processes, progress, rounds, placement)
    payload = {
        "placement": placement,
        "round_s": round_s,
        "seed": seed,
        "network_demand": demand,
        "world": _world_json(world),
        "policies": {name: r.as_json() for name, r in results.items()},
    }
    if out is not None:
        from ceti.sim.network_report import markdown_report, plot_gpu_use

        out.mkdir(parents=True, exist_ok=True)
        plot = out / "network-gpu-use.png"
        plot_gpu_use(results, plot, f"GPU use: {world.total_gpus} GPUs on {len(world.nodes)} nodes")
        command = _command_line()
        (out / "network.md").write_text(markdown_report(payload, results, command, plot.name))
        (out / "network.json").write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload))
        return
    from ceti.sim.network_report import COLUMNS, table_rows

    table = Table(
        title=f"Network simulation: {len(world.nodes)} nodes, {world.total_gpus} GPUs, {hours:g} h, "
        f"{len(world.jobs)} developer jobs, seed {seed}"
    )
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("policy", "network") else "right", no_wrap=col == "policy")
    for row in table_rows(results):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped: keep each row on one line
    console.print(table)
    console.print("idle: share of up GPU-hours with nothing allocated; wait: developer time-to-start")


def _world_json(world) -> dict:
    from ceti.sim.network_world import REGIONS

    return {
        "nodes": len(world.nodes),
        "gpus": world.total_gpus,
        "gpus_by_model": {m: sum(n.gpus for n in world.nodes if n.model == m) for m in world.models},
        "regions": [r[0] for r in REGIONS],
        "hours": world.horizon_s / 3600,
        "developer_jobs": len(world.jobs),
        "arrival_rate_per_h": world.arrival_rate_per_h,
        "load": world.load,
        "network_capacity_gpus": world.network_capacity_gpus,
        "source": world.source,
    }


def _run_one(world, name: str, demand: bool, round_s: float, seed: int, bound: bool, queue=None,
             placement: str = "fabric"):
    from ceti.sim.network import NetworkSim
    from ceti.sim.network_bound import upper_bound

    sim = NetworkSim(world, policy=name, network_demand=demand, round_s=round_s, seed=seed, placement=placement)
    step = max(1, int(3600 // round_s))

    def tick(r: int, n: int) -> None:
        if queue is not None and (r % step == 0 or r == n):
            queue.put((name, r))

    res = sim.run(tick)
    if bound:
        res.upper_bound = upper_bound(world, network_demand=demand)
    return res


def _run_all(world, plan, round_s, seed, bound, processes, progress, rounds, placement):
    tasks = {name: progress.add_task(name, total=rounds) for name, _ in plan}
    if processes <= 1 or len(plan) == 1:
        results = {}
        for name, demand in plan:
            res = _run_one(world, name, demand, round_s, seed, bound, _Advance(progress, tasks), placement)
            results[name] = res
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=min(processes, len(plan)), mp_context=ctx) as pool:
            futures = {name: pool.submit(_run_one, world, name, demand, round_s, seed, bound, queue, placement)
                       for name, demand in plan}
            pending = set(futures)
            while pending:
                _drain(queue, progress, tasks)
                for name in list(pending):
                    if futures[name].done():
                        pending.discard(name)
                if pending:
                    import time

                    time.sleep(0.2)
            _drain(queue, progress, tasks)
            return {name: futures[name].result() for name, _ in plan}


class _Advance:
    def __init__(self, progress, tasks) -> None:
        self.progress, self.tasks = progress, tasks

    def put(self, item) -> None:
        name, r = item
        self.progress.update(self.tasks[name], completed=r + 1)


def _drain(queue, progress, tasks) -> None:
    while not queue.empty():
        name, r = queue.get()
        progress.update(tasks[name], completed=r + 1)


def _command_line() -> str:
    from ceti.cli.sim import command_line  # here: `ceti.cli.sim` mounts this module's command

    return command_line("network")
