"""`ceti bench control-plane`: a real server under simulated agents and developers; latencies and costs.

Registered as `ceti bench control-plane` by the bench command group (`control_plane` is the typer function).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ceti.cli.remote import fail
from ceti.loadgen.run import KINDS, KNEE_P99_MS, BenchConfig, Live, UsedDatabase, find_knee, run_bench


def control_plane(
    agents: Annotated[int, typer.Option(help="simulated agents (nodes)", min=1, max=100_000)] = 2000,
    heartbeat_s: Annotated[float, typer.Option(help="seconds between one agent's heartbeats", min=0.05)] = 10.0,
    submits_per_s: Annotated[float, typer.Option(help="job submits per second (Poisson arrivals)", min=0)] = 50.0,
    duration_s: Annotated[float, typer.Option(help="seconds of load (a short drain follows)", min=1,
                                              max=3600)] = 120.0,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL URL (default: SQLite in a temp dir)")] = None,
    port: Annotated[int | None, typer.Option(help="port for the server on 127.0.0.1 (default: a free one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object, nothing else")] = False,
    max_connections: Annotated[int, typer.Option(help="HTTP connection pool size", min=1, max=1024)] = 64,
    seed: Annotated[int, typer.Option(help="random seed (hardware mix, jitter, arrivals)")] = 0,
    find_knee_: Annotated[bool, typer.Option("--find-knee", help=(
        f"step the agent count (--knee-steps) and report the largest at which every request kind keeps "
        f"p99 < {KNEE_P99_MS:.0f} ms with no errors"))] = False,
    knee_steps: Annotated[str, typer.Option(help="agent counts for --find-knee")] = "500,1000,2000,3000,4000",
    knee_duration_s: Annotated[float, typer.Option(help="seconds of load per --find-knee step", min=1)] = 45.0,
    replicas: Annotated[int, typer.Option(help=(
        "server processes on the one PostgreSQL database (needs --database-url); agents and submits are spread "
        "over them, one of them leads the scheduling"), min=1, max=16)] = 1,
    scheduler_apart: Annotated[bool, typer.Option(help=(
        "one more server process (needs --database-url) runs the scheduling rounds and gets no traffic; the "
        "--replicas that serve agents and developers run with --no-schedule"))] = False,
    verify: Annotated[bool, typer.Option(help=(
        "keep proof of hardware on: simulated agents cannot answer challenges, so every node's heartbeats take "
        "the full path until its first challenge expires (a start-up transient, not the steady state)"))] = False,
) -> None:
    """Load-test the control plane: a real `ceti server` on 127.0.0.1, simulated agents speaking the agent
    protocol and developers submitting jobs, all from one asyncio process. Prints request latencies
    (p50/p95/p99) over the whole run and, apart, for the steady state once the fleet has joined (requests sent
    from the second heartbeat interval's end on), scheduling-round latency, the server's CPU and peak memory, and
    jobs submitted/started/finished."""
    cfg = BenchConfig(agents=agents, heartbeat_s=heartbeat_s, submits_per_s=submits_per_s, duration_s=duration_s,
                      database_url=database_url, port=port, max_connections=max_connections, seed=seed,
                      verify=verify, replicas=replicas, scheduler_apart=scheduler_apart)
    if replicas > 1 and not database_url:
        raise typer.BadParameter("several replicas need PostgreSQL: give --database-url", param_hint="--replicas")
    if scheduler_apart and not database_url:
        raise typer.BadParameter("a scheduler apart needs PostgreSQL: give --database-url",
                                 param_hint="--scheduler-apart")
    console = Console(stderr=True)
    out = Console()
    if find_knee_:
        counts = [int(x) for x in knee_steps.split(",") if x.strip()]
        if not counts:
            raise typer.BadParameter("--knee-steps needs at least one count")

        def on_step(n: int, result: dict[str, Any]) -> None:
            if not as_json:
                verdict = "within" if result["within_bar"] else "OVER"
                console.print(f"[bold]{n} agents[/]: {verdict} the bar (p99 < {KNEE_P99_MS:.0f} ms, no errors)")
                out.print(result_table(result))

        try:
            with _progress(console, not as_json) as on_start:
                knee = find_knee(cfg, counts, knee_duration_s, on_step=on_step, on_start=on_start)
        except UsedDatabase as exc:
            fail(str(exc), 2)
        summary = {"knee": knee.knee, "p99_bar_ms": KNEE_P99_MS, "step_duration_s": knee_duration_s,
                   "database": "postgresql" if database_url else "sqlite", "steps": knee.steps}
        if as_json:
            print(json.dumps(summary))
        else:
            out.print(knee_table(summary))
        return
    try:
        with _progress(console, not as_json) as on_start:
            result = run_bench(cfg, on_start=on_start)
    except UsedDatabase as exc:
        fail(str(exc), 2)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(result_table(result))


class _progress:
    """A rich progress bar on stderr that follows the live counters of the run in progress."""

    def __init__(self, console: Console, enabled: bool):
        self.console, self.enabled = console, enabled
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if not self.enabled:
            return None
        self._thread = threading.Thread(target=self._show, daemon=True)
        self._thread.start()
        return self._set

    def _set(self, live: Live) -> None:
        self._live = live

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _show(self) -> None:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=self.console, transient=True) as bar:
            task = bar.add_task("starting", total=1.0, info="")
            while not self._stop.wait(0.5):
                live = self._live
                if live is None or not live.started_at:
                    continue
                r = live.rec
                errors = sum(getattr(r, k).errors for k in (*KINDS, "register"))
                bar.update(task, total=live.total_s, completed=min(time.monotonic() - live.started_at, live.total_s),
                           description=live.phase,
                           info=(f"nodes {r.counters.registered}  beats {r.heartbeat.count}  submits {live.submitted}"
                                 f"  started {r.counters.started}  finished {r.counters.finished}  errors {errors}"))


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def result_table(r: dict[str, Any]) -> Table:
    t = Table(title=(f"control plane: {r['agents']} agents, heartbeat {r['config']['heartbeat_s']} s, "
                     f"{r['config']['submits_per_s']} submits/s, {r['config']['duration_s']} s, {r['database']}, "
                     f"proof of hardware {'on' if r['config'].get('verify') else 'off'}"
                     + (f", {r['config']['replicas']} replicas" if r['config'].get('replicas', 1) > 1 else "")
                     + (", scheduler apart" if r['config'].get('scheduler_apart') else "")))
    t.add_column("requests")
    for c in ("count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        t.add_column(c, justify="right")
    for k in (*KINDS, "register"):
        s = r[k]
        style = "red" if s["errors"] or (s["p99_ms"] or 0) >= KNEE_P99_MS else None
        t.add_row(k, str(s["count"]), str(s["errors"]), _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"]),
                  _ms(s["max_ms"]), style=style, end_section=k == "register")
    steady = r.get("steady") or {}
    for k in KINDS:
        s = steady.get(k)
        if not s or not s["count"]:
            continue
        style = "red" if s["errors"] or (s["p99_ms"] or 0) >= KNEE_P99_MS else None
        t.add_row(f"{k}, from {steady['from_s']:.0f} s", str(s["count"]), str(s["errors"]), _ms(s["p50_ms"]),
                  _ms(s["p95_ms"]), _ms(s["p99_ms"]), _ms(s["max_ms"]), style=style)
    sr = r["schedule_round"]
    t.add_row("schedule round", str(sr.get("count", "-")), "", _ms(sr["p50_ms"]), "", _ms(sr["p99_ms"]),
              _ms(sr["max_ms"]), end_section=True)
    sv, lg, j = r["server"], r["loadgen"], r["jobs"]
    t.add_row("server process", f"cpu {sv['cpu_s']} s", f"{(sv['cpu_util'] or 0) * 100:.0f} %",
              f"peak rss {sv['peak_rss_mib']} MiB", "", "", "")
    t.add_row("load generator", f"cpu {lg['cpu_s']} s", f"{(lg['cpu_util'] or 0) * 100:.0f} %",
              f"late submits {lg['late_submits']}", "", "", "")
    t.add_row("jobs", f"submitted {j['submitted']}", "", f"started {j['started']}", f"finished {j['finished']}",
              f"stopped {j['stopped']}", "")
    return t


def knee_table(summary: dict[str, Any]) -> Table:
    knee = summary["knee"]
    t = Table(title=(f"knee ({summary['database']}): largest agent count with every p99 < "
                     f"{summary['p99_bar_ms']:.0f} ms and no errors = {knee if knee is not None else 'none'}"))
    t.add_column("agents", justify="right")
    for k in KINDS:
        t.add_column(f"{k} p99", justify="right")
    t.add_column("errors", justify="right")
    t.add_column("round p99", justify="right")
    t.add_column("server cpu", justify="right")
    t.add_column("within", justify="center")
    for r in summary["steps"]:
        t.add_row(str(r["agents"]), *(_ms(r[k]["p99_ms"]) for k in KINDS), str(r["errors"]),
                  _ms(r["schedule_round"]["p99_ms"]), f"{(r['server']['cpu_util'] or 0) * 100:.0f} %",
                  "yes" if r["within_bar"] else "no")
    return t
