"""Prometheus metrics at `/metrics`.

Two kinds of figures:
- the state of the network (nodes, GPUs, jobs, pre-emptions, what finished work added up to) is read from the store
  at scrape time with a few aggregate queries, so every replica reports the same figures and none is lost on a
  restart;
- what happens inside one server process (heartbeats received, scheduling-round durations) is counted where it
  happens, with the small `record_*` / `observe_*` functions below; these are per replica, as Prometheus expects
  (sum them over replicas in a query).

`/metrics` needs an admin token (Prometheus sends it with `authorization: {credentials_file: ...}` in its scrape
config). The figures are aggregates, but they describe every project's work, and "open on loopback" would be
open to anything behind a reverse proxy on the same host.

The money side: `ceti_ledger_total_micro_usd{account_kind}` sums the ledger's balances by kind of account (projects
negative, providers and the fabric positive; the three sum to zero), beside the wall and CPU seconds of finished
attempts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ceti import __version__
from ceti.server import schemas
from ceti.server.deps import AdminDep
from ceti.server.services import dashboard as views
from ceti.server.services import ledger
from ceti.spec import AllocationState, JobState
from ceti.store import models as m

# -- counted where it happens (process-wide) ----------------------------------------------------------

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
HEARTBEATS = Counter("ceti_heartbeats", "Agent heartbeats this server process answered (rate() gives per second)",
                     registry=PROCESS_REGISTRY)
ROUND_SECONDS = Histogram(
    "ceti_scheduling_round_seconds", "Duration of one scheduling round in this server process",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=PROCESS_REGISTRY,
)
_lock = threading.Lock()
_rounds_observed_directly = False


def record_heartbeat(count: int = 1) -> None:
    """Call once per answered agent heartbeat."""
    HEARTBEATS.inc(count)


def observe_round(seconds: float) -> None:
    """Call once per completed scheduling round with its duration. Once called, the scrape-time catch-up from the
    loop's recent durations (see `_RoundCatchUp`) turns itself off, so no round is counted twice."""
    global _rounds_observed_directly
    _rounds_observed_directly = True
    ROUND_SECONDS.observe(seconds)


class _RoundCatchUp:
    """Until the scheduling loop calls `observe_round` itself, each scrape feeds the histogram the rounds the loop
    completed since the last scrape, from the loop's own record of recent durations (the newest 1,024)."""

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}

    def sync(self, loop: Any) -> None:
        if loop is None or _rounds_observed_directly:
            return
        with _lock:
            rounds = int(getattr(loop, "rounds", 0))
            seen = self._seen.get(id(loop), 0)
            fresh = rounds - seen
            if fresh <= 0:
                return
            recent = list(getattr(loop, "recent_round_s", []))
            for value in recent[-fresh:] if fresh < len(recent) else recent:
                ROUND_SECONDS.observe(value)
            self._seen[id(loop)] = rounds


_catch_up = _RoundCatchUp()


# -- read from the store at scrape time ---------------------------------------------------------------


class StoreCollector(Collector):
    """Gauges and counters computed from the database on each scrape (aggregate queries only)."""

    def __init__(self, sessions, loop_of) -> None:
        self._sessions = sessions
        self._loop_of = loop_of

    def describe(self) -> list[Metric]:
        return []  # no queries at registration

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ceti_build_info", "The server's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        with self._sessions() as s:
            yield from _node_metrics(s)
            yield from _job_metrics(s)
            yield from _ledger_metrics(s)
        loop = self._loop_of()
        rounds = CounterMetricFamily("ceti_scheduling_rounds", "Scheduling rounds this server process completed")
        rounds.add_metric([], float(getattr(loop, "rounds", 0) or 0))
        yield rounds
        last = GaugeMetricFamily("ceti_scheduling_last_round_timestamp_seconds",
                                 "When this process's last scheduling round completed (UNIX time; 0 = none yet)")
        last.add_metric([], float(getattr(loop, "last_round_at", None) or 0.0))
        yield last


def _node_metrics(s) -> Iterator[Metric]:
    nodes = GaugeMetricFamily("ceti_nodes", "Nodes by state", labels=["state"])
    counts = {"online": 0, "lost": 0}
    counts.update(dict(s.execute(select(m.Node.state, func.count()).group_by(m.Node.state)).all()))
    for state, n in sorted(counts.items()):
        nodes.add_metric([state], n)
    yield nodes
    gpus = GaugeMetricFamily("ceti_gpus", "GPUs by model and what they do now: idle, developer work, a network's "
                             "name, or 'lost' (on a lost node)", labels=["model", "use"])
    by: dict[tuple[str, str], int] = {}
    for u in views.gpu_uses(s):
        key = (u.model, "lost" if u.node_state != "online" else u.use)
        by[key] = by.get(key, 0) + 1
    for (model, use), n in sorted(by.items()):
        gpus.add_metric([model, use], n)
    yield gpus


def _job_metrics(s) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("ceti_jobs", "Jobs by state and priority", labels=["state", "priority"])
    rows = s.execute(select(m.Job.state, m.Job.priority, func.count()).group_by(m.Job.state, m.Job.priority)).all()
    seen = set()
    for state, priority, n in sorted(rows):
        jobs.add_metric([state, str(priority)], n)
        seen.add(state)
    for state in JobState:  # every state appears, so a query over an empty network still finds the series
        if state.value not in seen:
            jobs.add_metric([state.value, "50"], 0)
    yield jobs
    pre = CounterMetricFamily("ceti_preemptions", "Pre-emptions the scheduler decided (from the event record)")
    pre.add_metric([], s.scalar(select(func.count()).select_from(m.Event).where(m.Event.kind == "preempted")) or 0)
    yield pre


def _ledger_metrics(s) -> Iterator[Metric]:
    ended = [x.value for x in AllocationState if not x.active]
    wall, cpu, count = s.execute(
        select(func.coalesce(func.sum(m.Allocation.wall_s), 0.0), func.coalesce(func.sum(m.Allocation.cpu_seconds), 0.0),
               func.count()).where(m.Allocation.state.in_(ended))
    ).one()
    w = CounterMetricFamily("ceti_ledger_wall_seconds", "Wall-clock seconds of finished job attempts (no ledger yet: "
                            "what the store records)")
    w.add_metric([], float(wall))
    yield w
    c = CounterMetricFamily("ceti_ledger_cpu_seconds", "CPU seconds of finished job attempts, as agents report them")
    c.add_metric([], float(cpu))
    yield c
    a = CounterMetricFamily("ceti_ledger_attempts", "Finished job attempts")
    a.add_metric([], float(count))
    yield a
    money = GaugeMetricFamily("ceti_ledger_total_micro_usd", "Sum of ledger balances by account kind, micro-USD "
                              "(projects pay: negative; providers and the fabric: positive; all sum to 0)",
                              labels=["account_kind"])
    for kind, total in ledger.totals_by_kind(s).items():
        money.add_metric([kind], float(total))
    yield money


def registry_of(app) -> CollectorRegistry:
    """The app's store collector, made on first scrape (so the app builder needs no change for it)."""
    reg = getattr(app.state, "metrics_registry", None)
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(StoreCollector(lambda: app.state.sessions(), lambda: getattr(app.state, "scheduler", None)))
        app.state.metrics_registry = reg
    return reg


def render(app) -> bytes:
    _catch_up.sync(getattr(app.state, "scheduler", None))
    return generate_latest(PROCESS_REGISTRY) + generate_latest(registry_of(app))


router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format"},
    **schemas.responses(*schemas.COMMON_ERRORS, 403),
})
def metrics(request: Request, _: AdminDep) -> Response:
    """The network's state and this server process's counters in Prometheus' text format (admin token)."""
    return Response(render(request.app), media_type=CONTENT_TYPE_LATEST)
