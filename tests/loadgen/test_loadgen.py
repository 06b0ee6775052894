"""`ceti bench control-plane`: the percentile code, the request path's accounting, and a short real run against
a real server on SQLite."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import numpy as np
import pytest
import typer
from aiohttp import web
from typer.testing import CliRunner

from ceti.cli.bench_control_plane import control_plane
from ceti.loadgen.agents import node_infos, timed_post
from ceti.loadgen.run import free_port, within
from ceti.loadgen.stats import Latency, percentile


def test_percentile_matches_numpy_linear():
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.expovariate(1 / 20) for _ in range(n)]
        for q in (0, 1, 50, 95, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges():
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1 and percentile([4, 1, 3, 2], 100) == 4  # unsorted input
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_counts_errors_apart():
    lat = Latency("x")
    for ms in range(1, 101):
        lat.ok(float(ms))
    lat.error("HTTP 500")
    lat.error("timeout")
    s = lat.summary()
    assert s["count"] == 102 and s["errors"] == 2
    assert s["p50_ms"] == 50.5 and s["p99_ms"] == pytest.approx(99.01) and s["max_ms"] == 100
    assert s["error_kinds"] == {"HTTP 500": 1, "timeout": 1}
    assert Latency("empty").summary()["p99_ms"] is None


def test_the_steady_state_keeps_only_what_was_sent_after_the_join():
    lat = Latency("x")
    for i in range(10):
        lat.ok(1000.0 if i < 5 else 10.0, sent_at=float(i))  # the join's requests are the slow ones
    lat.ok(5000.0)  # a request with no send time is in the whole run only
    lat.error("timeout", sent_at=1.0)
    lat.error("HTTP 503", sent_at=7.0)
    steady = lat.since(5.0).summary()
    assert steady["count"] == 6 and steady["errors"] == 1
    assert steady["p99_ms"] == 10.0 and steady["max_ms"] == 10.0
    whole = lat.summary()
    assert whole["count"] == 13 and whole["errors"] == 2 and whole["max_ms"] == 5000.0
    assert lat.since(100.0).summary()["p99_ms"] is None


async def _with_server(scenario):
    """Run `scenario(url)` against a small aiohttp app on 127.0.0.1 that answers the way the server can."""
    in_flight = {"now": 0, "max": 0}

    async def echo(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        return web.json_response({"echo": await request.json()})

    async def hold(request: web.Request) -> web.Response:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(float(request.query.get("s", "0.1")))
        finally:
            in_flight["now"] -= 1
        return web.json_response({})

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy")

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/empty", empty)
    app.router.add_post("/busy", busy)
    app.router.add_post("/hold", hold)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # the held requests need no grace
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        await scenario(f"http://{host}:{port}", in_flight)
    finally:
        await runner.cleanup()


def test_timed_post_answers_and_counts_errors_by_kind():
    async def scenario(url, in_flight):
        stat = Latency("x")
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            answer, ms = await timed_post(session, f"{url}/echo", stat, {"Authorization": "Bearer t"}, {"a": [1]})
            assert answer == {"echo": {"a": [1]}} and ms > 0
            assert (await timed_post(session, f"{url}/empty", stat, {}, {}))[0] == {}  # no body
            assert (await timed_post(session, f"{url}/busy", stat, {}, {}))[0] is None
            assert (await timed_post(session, f"{url}/hold?s=5", stat, {}, {}))[0] is None
            refused = f"http://127.0.0.1:{free_port()}/x"  # nothing listens there
            assert (await timed_post(session, refused, stat, {}, {}))[0] is None
            task = asyncio.create_task(timed_post(session, f"{url}/hold?s=5", stat, {}, {}))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(stat.samples_ms) == 2  # the two answers; failures keep their latency apart
        assert stat.error_kinds == {"HTTP 503": 1, "timeout": 1, "ClientConnectorError": 1,
                                    "unfinished at the end of the run": 1}

    asyncio.run(_with_server(scenario))


def test_connection_limit_bounds_in_flight_and_the_wait_counts_in_the_latency():
    async def scenario(url, in_flight):
        stat = Latency("x")
        connector = aiohttp.TCPConnector(limit=2, limit_per_host=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            results = await asyncio.gather(*(timed_post(session, f"{url}/hold?s=0.1", stat, {}, {})
                                             for _ in range(6)))
        assert in_flight["max"] == 2
        assert all(answer == {} for answer, _ in results)
        # six requests two at a time: the last pair waited for two rounds before its own
        assert max(ms for _, ms in results) >= 290

    asyncio.run(_with_server(scenario))


def test_simulated_hardware_mixes_gpu_boxes_and_cpu_nodes():
    infos = node_infos(200, seed=1)
    assert len({i.hostname for i in infos}) == 200
    assert any(not i.gpus for i in infos) and any(len(i.gpus) == 8 for i in infos)
    assert len({i.region for i in infos}) > 1


def test_knee_bar():
    kinds = {k: {"p99_ms": 10.0} for k in ("heartbeat", "reconcile", "submit", "logs")}
    assert within({**kinds, "errors": 0})
    assert not within({**kinds, "errors": 1})
    assert not within({**kinds, "logs": {"p99_ms": 250.0}, "errors": 0})


def test_short_real_run_against_sqlite():
    app = typer.Typer()
    app.command("control-plane")(control_plane)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the sub-command name
    result = CliRunner().invoke(app, ["control-plane", "--agents", "20", "--heartbeat-s", "0.5",
                                      "--submits-per-s", "5", "--duration-s", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("heartbeat", "submit", "reconcile", "logs", "errors", "schedule_round", "server", "jobs", "agents",
                "database"):
        assert key in out, key
    for kind in ("heartbeat", "submit", "reconcile", "logs"):
        assert out[kind]["count"] > 0, kind
        assert out[kind]["errors"] == 0, (kind, out[kind])
        assert {"p50_ms", "p95_ms", "p99_ms"} <= set(out[kind])
    assert out["errors"] == 0
    assert out["agents"] == 20 and out["database"] == "sqlite"
    assert out["jobs"]["submitted"] > 0
    assert out["jobs"]["started"] > 0 and out["jobs"]["finished"] > 0
    assert out["jobs"]["finished"] <= out["jobs"]["started"] <= out["jobs"]["submitted"]
    assert out["schedule_round"]["count"] > 0 and out["schedule_round"]["p50_ms"] is not None
    assert out["server"]["cpu_s"] > 0 and out["server"]["peak_rss_mib"] > 0
    # the steady state (from the second 0.5 s interval's end) is a part of the whole run
    assert out["steady"]["from_s"] == 1.0
    assert 0 < out["steady"]["heartbeat"]["count"] < out["heartbeat"]["count"]
    assert out["steady"]["heartbeat"]["errors"] == 0


def _cli(*args: str):
    app = typer.Typer()
    app.command("control-plane")(control_plane)
    app.command("noop")(lambda: None)
    return CliRunner().invoke(app, ["control-plane", *args])


def test_replicas_need_postgres():
    result = _cli("--replicas", "3", "--agents", "5", "--duration-s", "1")
    assert result.exit_code == 2 and "PostgreSQL" in result.output


@pytest.mark.postgres
def test_short_run_against_two_replicas_on_postgres(postgres):
    result = _cli("--replicas", "2", "--agents", "8", "--heartbeat-s", "0.5", "--submits-per-s", "4",
                  "--duration-s", "3", "--database-url", postgres.new_database(), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["errors"] == 0 and out["database"] == "postgresql"
    assert out["server"]["replicas"] == 2 and out["config"]["replicas"] == 2
    assert out["registered"] == 8
    # agents on both replicas, jobs submitted to both, scheduled by the one leader
    assert out["jobs"]["started"] > 0 and out["schedule_round"]["count"] > 0


def test_scheduler_apart_needs_postgres():
    result = _cli("--scheduler-apart", "--agents", "5", "--duration-s", "1")
    assert result.exit_code == 2 and "PostgreSQL" in result.output


@pytest.mark.postgres
def test_short_run_with_the_scheduler_apart(postgres):
    """One serving replica (--no-schedule) takes every request; the scheduler apart, given none, runs the rounds."""
    result = _cli("--scheduler-apart", "--agents", "8", "--heartbeat-s", "0.5", "--submits-per-s", "4",
                  "--duration-s", "3", "--database-url", postgres.new_database(), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["errors"] == 0 and out["registered"] == 8
    assert out["server"]["replicas"] == 2 and out["server"]["scheduler_apart"] is True
    assert out["config"]["replicas"] == 1 and out["config"]["scheduler_apart"] is True
    assert out["jobs"]["started"] > 0 and out["schedule_round"]["count"] > 0


@pytest.mark.postgres
def test_a_database_that_already_holds_a_fabric_is_refused(postgres):
    """Pointed at a database some server already made (it has an admin token), the bench stops with a
    one-line reason instead of adding thousands of simulated nodes to it."""
    import time

    from ceti.server.services.tokens import bootstrap_admin
    from ceti.store.db import make_engine, migrate, session_factory

    url = postgres.new_database()
    engine = make_engine(url)
    migrate(engine)  # what a server does on its first start
    with session_factory(engine)() as s:
        assert bootstrap_admin(s, time.time())
        s.commit()
    engine.dispose()
    again = _cli("--agents", "4", "--duration-s", "1", "--database-url", url, "--json")
    assert again.exit_code == 2
    assert "must name an empty database" in again.output and "Traceback" not in again.output
