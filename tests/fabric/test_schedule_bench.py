"""`ceti bench fabric` runs end to end (small sizes) and reports what it promises."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ceti.cli.bench import app, synthetic_snapshot
from ceti.fabric import schedule


def test_bench_fabric_json() -> None:
    res = CliRunner().invoke(app, ["fabric", "--nodes", "300", "--jobs", "300", "--rounds", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in (
        "ours_median_s",
        "ours_max_s",
        "kernels_warm_s",
        "ours_peak_traced_mib",
        "baseline_peak_traced_mib",
        "memory_ratio",
        "ours_placed_jobs",
        "baseline_per_job_ms",
        "baseline_est_full_round_s",
        "speedup",
        "note",
    ):
        assert key in out
    assert out["nodes"] == 300 and out["jobs"] == 300 and len(out["ours_latencies_s"]) == 2
    assert out["ours_placed_jobs"] > 0
    assert out["baseline_peak_traced_mib"] > 0 and out["baseline_memory_jobs"] == 300
    assert out["memory_ratio"] > 0  # from the unrounded peaks


def test_bench_fabric_times_the_placement_the_server_uses() -> None:
    """`--placement` as the server's CETI_PLACEMENT: per task on a round this small, unless `flow`; an unknown
    one exits 2 with one line."""
    base = ["fabric", "--nodes", "120", "--jobs", "150", "--rounds", "1", "--json"]
    by = {}
    for placement in ("fabric", "flow"):
        res = CliRunner().invoke(app, [*base, "--placement", placement])
        assert res.exit_code == 0, res.output
        by[placement] = json.loads(res.output)
    assert by["fabric"]["placed_by"] == "per task" and by["flow"]["placed_by"] == "flow"
    assert by["fabric"]["placement"] == "fabric" and by["fabric"]["ours_placed_jobs"] > 0
    bad = CliRunner().invoke(app, [*base, "--placement", "best"])
    assert bad.exit_code == 2 and "unknown --placement 'best'" in bad.output


def test_bench_fabric_table() -> None:
    res = CliRunner().invoke(app, ["fabric", "--nodes", "100", "--jobs", "100", "--rounds", "1"])
    assert res.exit_code == 0, res.output
    assert "speed-up" in res.output
    assert "baseline: peak traced memory" in res.output


def test_bench_fabric_profile_shows_where_the_round_spends_its_time() -> None:
    """`--profile N`: one more round under cProfile, the core's N functions by cumulative time, the round's own
    entry first; the flow path's solver is among them. Without it, no profile."""
    base = ["fabric", "--nodes", "150", "--jobs", "200", "--rounds", "1", "--placement", "flow"]
    res = CliRunner().invoke(app, [*base, "--json", "--profile", "40"])
    assert res.exit_code == 0, res.output
    top = json.loads(res.output)["profile_top"]
    assert 0 < len(top) <= 40
    assert top[0]["function"] == "schedule.schedule" and top[0]["calls"] == 1
    assert [r["cumulative_s"] for r in top] == sorted((r["cumulative_s"] for r in top), reverse=True)
    assert "OR-Tools SimpleMinCostFlow.solve" in {r["function"] for r in top}
    assert {"schedule._Round.run", "classes.job_kinds", "classes.NodeTable.__init__"} <= {
        r["function"] for r in top
    }
    table = CliRunner().invoke(app, [*base, "--profile", "5"])
    assert table.exit_code == 0 and "one round under the profiler" in table.output
    plain = CliRunner().invoke(app, [*base, "--json"])
    assert json.loads(plain.output)["profile_top"] is None


def test_synthetic_snapshot_is_seeded_and_schedulable() -> None:
    a = synthetic_snapshot(200, 200, seed=3)
    b = synthetic_snapshot(200, 200, seed=3)
    assert a == b
    d = schedule(a)
    assert len({s.job_id for s in d.starts}) + len(d.waiting) + len(d.unschedulable) == 200
