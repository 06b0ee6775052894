"""`ceti bench control-plane`: the percentile code, and a short real run against a real server on SQLite."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ceti.cli.bench_control_plane import control_plane
from ceti.loadgen.agents import node_infos
from ceti.loadgen.run import within
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
