"""`ceti sim`: trace-driven experiments with the placement policies."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ceti.fabric.placement.registry import policy_names
from ceti.sim.inflation import LIVE_BATCH, InflationSetup, live_placement, run_experiment
from ceti.sim.trace import TraceError, load_nodes, load_pods, write_pods

DEFAULT_PROCESSES = min(2, os.cpu_count() or 1)

app = typer.Typer(help="Trace-driven simulation: replay real cluster traces through the placement policies.")


@app.callback()
def main() -> None:
    """Trace-driven simulation: replay real cluster traces through the placement policies."""


def _policies(spec: str, live: bool = False) -> list[str]:
    """Policy names from a comma-separated list ("all" = every placement policy); with `live`, also the live
    scheduling round: "live" (the server's placement) or "live:PLACEMENT"."""
    from ceti.fabric.per_task import placement_names
    from ceti.sim.inflation import LIVE

    known = policy_names()
    names: list[str] = []
    for p in (p.strip() for p in spec.split(",")):
        if p == "all":
            names += [n for n in known if n not in names]
        elif p and p not in names:
            names.append(p)
    live_ok = set(placement_names()) if live else set()
    unknown = [p for p in names if p not in known and live_placement(p) not in live_ok]
    if unknown or not names:
        extra = f", {LIVE}, {LIVE}:PLACEMENT ({', '.join(placement_names())})" if live else ""
        raise typer.BadParameter(
            f"unknown policy {', '.join(unknown) or spec!r}; known: all, {', '.join(known)}{extra}"
        )
    return names


def _load_trace(nodes: Path, pods: Path, on_error: str, err: Console) -> tuple[list, list, int]:
    """Both CSVs of a trace, bad rows reported (the first 20) and skipped or refused; exit 2 with one line when
    the files cannot be read or leave nothing usable. Returns node rows, pod rows and how many rows were skipped."""
    _check_on_error(on_error)
    try:
        node_load = load_nodes(nodes, on_error=on_error)  # type: ignore[arg-type]
        pod_load = load_pods(pods, on_error=on_error)  # type: ignore[arg-type]
    except TraceError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    skipped = _report_skipped(node_load.errors + pod_load.errors, err)
    if not node_load.rows or not pod_load.rows:
        err.print("[red]error:[/red] no usable nodes or pods", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    return node_load.rows, pod_load.rows, skipped


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "reject"):
        raise typer.BadParameter("--on-error must be skip or reject")


def _report_skipped(errors: list, err: Console) -> int:
    """The first 20 bad rows (file and line) and how many more; returns how many were skipped."""
    for e in errors[:20]:
        err.print(f"[yellow]skipped[/yellow] {e}")
    if len(errors) > 20:
        err.print(f"[yellow]... {len(errors) - 20} more bad rows skipped[/yellow]")
    return len(errors)


def _progress(err: Console) -> Progress:
    """A bar for runs that take a while, on stderr, shown only on a terminal."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def command_line(sub: str) -> str:
    """The command as it was typed, from the sub-command `sub` on, however the CLI was mounted (`ceti sim
    inflation ...`, or this app alone): what a report says reproduces it."""
    args = sys.argv[1:]
    if sub in args:
        args = args[args.index(sub) + 1 :]
    return f"ceti sim {sub} " + " ".join(shlex.quote(a) for a in args)


@app.command()
def inflation(
    nodes: Annotated[
        Path, typer.Option("--nodes", help="Node list CSV (sn, cpu_milli, memory_mib, gpu, model).")
    ],
    pods: Annotated[
        Path, typer.Option("--pods", help="Pod list CSV (name, cpu_milli, memory_mib, num_gpu, ...).")
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="all, or comma-separated policy names; 'live' (or live:PLACEMENT) runs the live scheduling "
            "round on batches of arrivals instead.",
        ),
    ] = "all",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds (first-seed, +1, ...).")] = 10,
    first_seed: Annotated[int, typer.Option("--first-seed")] = 42,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Arrivals per round of the live entries.")
    ] = LIVE_BATCH,
    inflate_to: Annotated[
        float, typer.Option("--inflate-to", help="Requested GPUs as a share of capacity.")
    ] = 1.3,
    stop_at: Annotated[
        float | None,
        typer.Option(
            "--stop-at", help="End each run once arrivals pass this % of capacity (default: run all)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write a markdown report and PNG plots here.")
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="skip: report bad trace rows and skip them; reject: stop.")
    ] = "skip",
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Worker processes (seeds x policies).")
    ] = DEFAULT_PROCESSES,
    breakdown: Annotated[
        bool,
        typer.Option(
            "--breakdown",
            help="Also print where the unallocated GPUs are when arrivals reach capacity: failed pods by "
            "shape, idle GPUs, and the room left on partly used GPUs (always in --json and --out).",
        ),
    ] = False,
) -> None:
    """The FGD paper's workload-inflation experiment: unallocated GPUs when arrivals reach 100%."""
    err = Console(stderr=True)
    names = _policies(policy, live=True)
    node_rows, pod_rows, skipped = _load_trace(nodes, pods, on_error, err)
    setup = InflationSetup.build(node_rows, pod_rows)
    seed_list = list(range(first_seed, first_seed + seeds))
    total = len(names) * len(seed_list)
    with _progress(err) as progress:
        task = progress.add_task("inflation runs", total=total)
        summaries = run_experiment(
            setup,
            names,
            seed_list,
            inflation=inflate_to,
            stop_at_percent=stop_at,
            processes=processes,
            on_result=lambda r: progress.advance(task),
            batch=batch,
        )
    payload = {
        "nodes": str(nodes),
        "pods": str(pods),
        "total_gpus": int(setup.cluster.gpu_count.sum()),
        "pods_read": len(pod_rows),
        "rows_skipped": skipped,
        "target_classes": len(setup.workload),
        "policies": {n: s.as_json() for n, s in summaries.items()},
    }
    if any(live_placement(n) is not None for n in names):
        payload["live_batch"] = batch
    if out is not None:
        from ceti.sim.report import markdown_report, plot_allocation

        out.mkdir(parents=True, exist_ok=True)
        plot = out / f"allocation-{pods.stem}.png"
        plot_allocation(summaries, plot, pods.stem)
        command = command_line("inflation")
        report = markdown_report(
            summaries, nodes=str(nodes), pods=str(pods), command=command, plot_name=plot.name
        )
        (out / f"inflation-{pods.stem}.md").write_text(report)
        (out / f"inflation-{pods.stem}.json").write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload))
        return
    table = Table(title=f"Workload inflation: {pods.name} on {nodes.name} ({payload['total_gpus']} GPUs)")
    table.add_column("policy")
    table.add_column("unallocated GPUs at 100%", justify="right")
    table.add_column("allocation ratio at 100%", justify="right")
    for n, s in summaries.items():
        mean, std = s.unallocated_gpus(100)
        table.add_row(n, f"{mean:.1f} ± {std:.1f}", f"{s.allocation_ratio(100):.2%}")
    Console().print(table)
    if breakdown:
        from ceti.sim.report import breakdown_rows

        rows = breakdown_rows(summaries)
        if not rows:
            err.print("no breakdown: no run reached the cluster's capacity (live entries have none)")
            return
        detail = Table(title="Where the unallocated GPUs are when arrivals reach capacity (means over seeds)")
        for col in ("policy", "unallocated", "failed pods (GPUs)", "idle GPUs", "room on partly used GPUs"):
            detail.add_column(col, overflow="fold")
        for r in rows:
            detail.add_row(*r)
        Console().print(detail)


@app.command()
def replay(
    nodes: Annotated[Path, typer.Option("--nodes", help="Node list CSV.")],
    pods: Annotated[
        Path, typer.Option("--pods", help="Pod list CSV with creation/deletion/scheduled times.")
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="all, or comma-separated policy names; 'live' (or live:PLACEMENT) runs the live scheduling "
            "round at every change instead.",
        ),
    ] = "all",
    load: Annotated[
        float | None,
        typer.Option("--load", help="Compress arrivals until peak GPU demand is this share of the cluster."),
    ] = 1.2,
    cluster_fraction: Annotated[
        float, typer.Option("--cluster-fraction", help="Replay on every k-th node (same GPU mix), 0-1.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write a markdown report and a utilization plot here.")
    ] = None,
    on_error: Annotated[str, typer.Option("--on-error", help="skip or reject bad trace rows.")] = "skip",
) -> None:
    """Replay a trace with real arrival and run times: queueing delay and completion time per QoS class."""
    from ceti.sim.replay import ReplaySetup, highest_class, run_replay

    err = Console(stderr=True)
    names = _policies(policy, live=True)
    node_rows, pod_rows, _ = _load_trace(nodes, pods, on_error, err)
    try:
        setup = ReplaySetup.build(node_rows, pod_rows, load=load, cluster_fraction=cluster_fraction)
    except (TraceError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    results = []
    with _progress(err) as progress:
        task = progress.add_task("replay runs", total=len(names))
        for name in names:
            results.append(run_replay(setup, name, seed))
            progress.advance(task)
    top = highest_class(results)
    payload = {
        "nodes": str(nodes),
        "pods": str(pods),
        "cluster_nodes": setup.cluster.size,
        "cluster_gpus": int(setup.cluster.gpu_count.sum()),
        "load": load,
        "arrival_time_scale": setup.time_scale,
        "highest_class": top,
        "policies": {r.policy: r.as_json() for r in results},
    }
    if out is not None:
        from ceti.sim.report import plot_utilization, replay_report

        out.mkdir(parents=True, exist_ok=True)
        plot = out / f"replay-utilization-{pods.stem}.png"
        plot_utilization(results, plot, pods.stem)
        command = command_line("replay")
        (out / f"replay-{pods.stem}.md").write_text(replay_report(payload, command, plot.name))
        (out / f"replay-{pods.stem}.json").write_text(json.dumps(payload, indent=2))
    if as_json:
        typer.echo(json.dumps(payload))
        return
    table = Table(
        title=f"Replay: {pods.name} on {payload['cluster_nodes']} nodes ({payload['cluster_gpus']} GPUs), "
        f"load {load}"
    )
    for col in (
        "policy",
        "class",
        "pods",
        "mean wait s",
        "p95 wait s",
        "mean JCT s",
        "never started",
        "pre-empted",
        "GPU util",
    ):
        table.add_column(col, justify="left" if col in ("policy", "class") else "right")
    for r in results:
        for q, c in r.as_json()["classes"].items():  # type: ignore[union-attr]
            table.add_row(
                r.policy,
                q + (" *" if q == top else ""),
                str(c["pods"]),
                _fmt(c["mean_queue_delay_s"]),
                _fmt(c["p95_queue_delay_s"]),
                _fmt(c["mean_completion_s"]),
                str(c["never_started"]),
                str(c["preemptions"]),
                f"{r.gpu_utilization:.1%}",
            )
    Console().print(table)
    if top:
        Console().print(f"* the highest QoS class with at least 30 pods: {top}")


@app.command()
def bound(
    nodes: Annotated[Path, typer.Option("--nodes", help="Node list CSV.")],
    pods: Annotated[Path, typer.Option("--pods", help="Pod list CSV.")],
    fraction: Annotated[
        float, typer.Option("--fraction", help="Share of the nodes (per node type) and of the arrivals, 0-1.")
    ] = 0.1,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds (first-seed, +1, ...).")] = 3,
    first_seed: Annotated[int, typer.Option("--first-seed")] = 42,
    time_limit: Annotated[
        float, typer.Option("--time-limit", help="CP-SAT seconds per seed (0: relaxation only).")
    ] = 30.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="CP-SAT worker threads.")] = 1,
    policy: Annotated[str, typer.Option("--policy", help="Online policies to compare.")] = "fgd,fabric",
    full: Annotated[
        bool, typer.Option("--full/--no-full", help="Also bound the full cluster by the relaxation.")
    ] = True,
    full_online: Annotated[
        bool,
        typer.Option(
            "--full-online", help="Also replay the policies on the full cluster (minutes per seed)."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    fit_rule: Annotated[
        bool,
        typer.Option(
            "--fit-rule",
            help="Also the full cluster's floor for any policy that places every pod that fits, in the "
            "experiment's reading (a few LP solves per seed, seconds each on the full trace).",
        ),
    ] = False,
    checkpoints: Annotated[
        int,
        typer.Option("--checkpoints", min=2, help="LP solves across the reading's arrivals (--fit-rule)."),
    ] = 2,
    on_error: Annotated[str, typer.Option("--on-error", help="skip or reject bad trace rows.")] = "skip",
) -> None:
    """Offline bounds at 100% arrived: the most GPU any placement could allocate, vs the online policies."""
    from ceti.sim.inflation_bound import BoundError, bound_seed, relaxation_bound, sub_instance

    err = Console(stderr=True)
    names = _policies(policy)
    if not 0 < fraction <= 1:
        err.print(f"[red]error:[/red] --fraction must be in (0, 1], not {fraction}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if time_limit < 0:
        err.print("[red]error:[/red] --time-limit must be >= 0", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    node_rows, pod_rows, _ = _load_trace(nodes, pods, on_error, err)
    setup = InflationSetup.build(node_rows, pod_rows)
    seed_list = list(range(first_seed, first_seed + seeds))
    results, full_results, full_rows = [], [], []
    try:
        for s in seed_list:
            results.append(
                bound_seed(
                    setup,
                    node_rows,
                    s,
                    fraction=fraction,
                    policies=names,
                    time_limit=time_limit or 1.0,
                    workers=workers,
                    exact=time_limit > 0,
                )
            )
            if full_online:
                r = bound_seed(setup, node_rows, s, fraction=1.0, policies=names, exact=False)
                full_results.append(r)
                full_rows.append(r.as_json())
            elif full:
                inst = sub_instance(node_rows, setup.pods, s, 1.0)
                relax = relaxation_bound(inst.cluster, inst.requests)
                full_rows.append(
                    {
                        "seed": s,
                        "gpus": int(inst.cluster.gpu_count.sum()),
                        "pods": len(inst.pods),
                        "arrived_gpus": inst.arrived_milli / 1000,
                        "unallocated_lower_bound": round((inst.capacity_milli - relax.upper_milli) / 1000, 3),
                    }
                )
        floors, readings = (
            _fit_rule_floors(setup, seed_list, checkpoints, names, err) if fit_rule else ([], {})
        )
    except BoundError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    total_gpus = int(setup.cluster.gpu_count.sum())
    payload: dict[str, object] = {
        "nodes": str(nodes),
        "pods": str(pods),
        "fraction": fraction,
        "time_limit_s": time_limit,
        "total_gpus": total_gpus,
        "sub_instances": [r.as_json() for r in results],
        "full_cluster": full_rows,
    }
    if fit_rule:
        payload["fit_rule"] = [
            {**f.as_json(), "readings": {n: round(readings[n][k], 3) for n in names}}
            for k, f in enumerate(floors)
        ]
        payload["fit_rule_mean_unallocated_floor_reading"] = round(
            float(np.mean([f.unallocated_reading for f in floors])), 3
        )
    if as_json:
        typer.echo(json.dumps(payload))
        return
    title = f"Unallocated GPUs at 100% arrived: {pods.name}, {fraction:g} of the cluster (lower is better)"
    _bound_table(title, results, names, total_gpus, scale=True)
    if full_results:
        _bound_table(f"Full cluster ({total_gpus} GPUs), relaxation only", full_results, names, total_gpus)
    elif full_rows:
        ft = Table(title=f"Full cluster ({total_gpus} GPUs): relaxation bound at 100% arrived")
        for c in ("seed", "pods", "arrived GPUs", "unallocated GPUs (>=)"):
            ft.add_column(c, justify="right")
        for row in full_rows:
            ft.add_row(
                str(row["seed"]),
                str(row["pods"]),
                f"{row['arrived_gpus']:.1f}",
                f"{row['unallocated_lower_bound']:.2f}",
            )
        Console().print(ft)
    if floors:
        _fit_rule_table(floors, readings)
    Console().print(
        "bound (>=): no placement leaves fewer GPUs unallocated; keeping X's large shares: none that places "
        "as many shares above 500 milli as X did; keeping X's shares: none that places as many shares of every "
        "size as X did; offline best: a placement found (opt = proven optimal)"
    )


@app.command()
def variant(
    pods: Annotated[Path, typer.Option("--pods", help="Pod list CSV to start from.")],
    out: Annotated[Path, typer.Option("--out", help="Pod list CSV to write.")],
    multi_gpu_demand: Annotated[
        float | None,
        typer.Option(
            "--multi-gpu-demand", help="Share of the GPU demand that pods of 2+ GPUs ask, at least (0-1)."
        ),
    ] = None,
    multi_gpu_from: Annotated[
        Path | None,
        typer.Option("--multi-gpu-from", help="Pod list to draw multi-GPU pods from (default: --pods)."),
    ] = None,
    share_pods: Annotated[
        float | None,
        typer.Option("--share-pods", help="Fraction of the GPU pods that share a GPU, at least (0-1)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    on_error: Annotated[str, typer.Option("--on-error", help="skip or reject bad trace rows.")] = "skip",
) -> None:
    """A pod list with more multi-GPU work or more GPU sharing, to check policies on mixes not tuned to.

    Whole one-GPU pods, at random, take the resources of pods drawn from the file (or --multi-gpu-from); each
    keeps its name and times."""
    from ceti.sim.variants import (
        VariantError,
        multi_gpu_demand_share,
        share_pod_fraction,
        with_multi_gpu_demand,
        with_share_pods,
    )

    err = Console(stderr=True)
    if multi_gpu_demand is None and share_pods is None:
        err.print("[red]error:[/red] nothing to change: give --multi-gpu-demand and/or --share-pods",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    _check_on_error(on_error)
    try:
        load = load_pods(pods, on_error=on_error)  # type: ignore[arg-type]
        pool_load = load_pods(multi_gpu_from, on_error=on_error) if multi_gpu_from else load  # type: ignore[arg-type]
    except TraceError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _report_skipped(load.errors + (pool_load.errors if pool_load is not load else []), err)
    pool = pool_load.rows
    rows = load.rows
    if not rows:
        err.print(f"[red]error:[/red] {pods} has no usable pod rows", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    rng = np.random.default_rng(seed)
    before = (multi_gpu_demand_share(rows), share_pod_fraction(rows))
    try:
        if multi_gpu_demand is not None:
            rows = with_multi_gpu_demand(rows, multi_gpu_demand, pool, rng)
        if share_pods is not None:
            rows = with_share_pods(rows, share_pods, load.rows, rng)
        write_pods(out, rows)
    except (VariantError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    changed = sum(1 for a, b in zip(load.rows, rows, strict=True) if a != b)
    typer.echo(
        f"wrote {out}: {len(rows)} pods, {changed} changed; multi-GPU demand share {before[0]:.3f} -> "
        f"{multi_gpu_demand_share(rows):.3f}, sharing GPU pods {before[1]:.3f} -> {share_pod_fraction(rows):.3f}"
    )


def _bound_table(title: str, results: list, names: list[str], total_gpus: int, scale: bool = False) -> None:
    table = Table(title=title)
    keepers = {r.keep_policy for r in results}
    # the better online policy of each seed; name it when it is the same one on every seed
    keep = (next(iter(keepers)) if len(keepers) == 1 else "the better policy") if results else None
    exact = bool(results) and all(r.offline is not None for r in results)
    cols = ["seed", "nodes", "GPUs", "pods", "bound (>=)"]
    if keep:
        cols += [f"keeping {keep}'s large shares (>=)", f"keeping {keep}'s shares (>=)"]
    if exact:
        cols.append("offline best")
    for c in cols + names:
        table.add_column(c, justify="right")

    def row_values(r) -> list[float]:  # type: ignore[no-untyped-def]
        v = [r.unallocated(r.upper_milli)]
        if keep:
            v += [r.unallocated(r.keep_milli), r.unallocated(r.keep_all_milli)]
        if exact:
            v.append(r.unallocated(r.offline.best_milli))
        return v + [r.unallocated(r.online_milli[n]) for n in names]

    for r in results:
        cells = [f"{v:.2f}" for v in row_values(r)]
        if exact and (r.offline.optimal or r.offline.best_milli >= r.upper_milli):
            cells[len(cells) - len(names) - 1] += " (opt)"
        table.add_row(str(r.seed), str(r.nodes), str(r.gpus), str(r.pods), *cells)
    if results:
        vals = np.asarray([row_values(r) for r in results])
        if scale:
            factor = np.asarray([total_gpus / r.gpus for r in results])[:, None]
            table.add_row(
                f"mean x{total_gpus} GPUs", "", "", "", *(f"{v:.0f}" for v in (vals * factor).mean(0))
            )
        else:
            table.add_row("mean", "", "", "", *(f"{v:.1f}" for v in vals.mean(0)))
    Console().print(table)


def _fit_rule_floors(
    setup: InflationSetup, seeds: list[int], checkpoints: int, names: list[str], err: Console
) -> tuple[list, dict[str, list[float]]]:
    """Per seed, the fit-rule floor of the reading at 100%, and each policy's own reading beside it (the
    experiment run to 101%)."""
    from ceti.sim.fit_rule_bound import reading_floor
    from ceti.sim.inflation import run_inflation

    floors = []
    readings: dict[str, list[float]] = {n: [] for n in names}
    with _progress(err) as bar:
        task = bar.add_task(
            "fit-rule floor: LP solves, runs", total=len(seeds) * (checkpoints + 1 + len(names))
        )
        for s in seeds:
            floors.append(
                reading_floor(setup, s, checkpoints=checkpoints, progress=lambda: bar.advance(task))
            )
            for n in names:
                readings[n].append(run_inflation(setup, n, s, stop_at_percent=101).unallocated_gpus_at(100))
                bar.advance(task)
    return floors, readings


def _fit_rule_table(floors: list, readings: dict[str, list[float]]) -> None:
    table = Table(
        title=f"Full cluster ({floors[0].total_gpus} GPUs): the least unallocated GPUs any policy that "
        "places every pod that fits can leave, and the policies' own"
    )
    cols = ["seed", "arrivals read", "LP solves", "at the last arrival <= 100% (>=)", "reading at 100% (>=)"]
    for c in cols + list(readings):
        table.add_column(c, justify="right")
    for k, f in enumerate(floors):
        first, last = f.band
        table.add_row(
            str(f.seed),
            f"{first + 1}-{last + 1}",
            str(len(f.checkpoints)),
            f"{f.unallocated_at_cut:.2f}",
            f"{f.unallocated_reading:.2f}",
            *(f"{v[k]:.2f}" for v in readings.values()),
        )
    table.add_row(
        "mean",
        "",
        "",
        f"{np.mean([f.unallocated_at_cut for f in floors]):.1f}",
        f"{np.mean([f.unallocated_reading for f in floors]):.1f}",
        *(f"{np.mean(v):.1f}" for v in readings.values()),
    )
    Console().print(table)
    Console().print(
        "reading at 100%: the experiment's figure (the mean over the arrivals whose arrived share rounds to "
        "100%), as `ceti sim inflation` reads it; no policy under the rule shows less. The policies' columns "
        "are their own readings, each seed's run as in `ceti sim inflation`"
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _mount_network() -> None:
    from ceti.cli.sim_network import network

    app.command("network")(network)


_mount_network()
