"""Trace variants (`ceti sim variant`): more multi-GPU work or more sharing, names and times kept."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ceti.cli.sim import app
from ceti.sim.trace import TracePod, load_pods, write_pods
from ceti.sim.variants import (
    VariantError,
    multi_gpu_demand_share,
    share_pod_fraction,
    with_multi_gpu_demand,
    with_share_pods,
)


def pod(i: int, gpus: int, milli: int, cpu: int = 4000, **kw) -> TracePod:
    return TracePod(f"p{i}", cpu, 8000, gpus, milli, creation_time=10 * i, deletion_time=10 * i + 5, **kw)


# 6 whole one-GPU pods, 2 shares of 500, 1 CPU pod, 1 four-GPU pod: GPU demand 6,000 + 1,000 + 4,000 = 11,000
PODS = [pod(i, 1, 1000) for i in range(6)] + [pod(6, 1, 500), pod(7, 1, 500), pod(8, 0, 0), pod(9, 4, 1000)]


def test_the_mix_measures_by_hand() -> None:
    assert multi_gpu_demand_share(PODS) == pytest.approx(4000 / 11_000)
    assert share_pod_fraction(PODS) == pytest.approx(2 / 9)  # of the 9 GPU pods
    assert multi_gpu_demand_share([]) == 0.0 and share_pod_fraction([pod(0, 0, 0)]) == 0.0


def test_more_multi_gpu_demand_replaces_whole_one_gpu_pods_and_keeps_names_and_times() -> None:
    eight = pod(99, 8, 1000, cpu=64_000, gpu_spec="V100M32", gpu_models=frozenset({"V100M32"}))
    out = with_multi_gpu_demand(PODS, 0.6, [eight], np.random.default_rng(1))
    # one 8-GPU pod for a 1-GPU pod: 12,000 of 18,000 = 0.667 >= 0.6 (0 replacements gave 0.364)
    changed = [(a, b) for a, b in zip(PODS, out, strict=True) if a != b]
    assert len(changed) == 1
    before, after = changed[0]
    assert (before.gpu_count, before.gpu_milli) == (1, 1000)
    assert (after.name, after.creation_time, after.deletion_time) == (
        before.name,
        before.creation_time,
        before.deletion_time,
    )
    assert (after.gpu_count, after.cpu_milli, after.gpu_spec, after.gpu_models) == (
        8,
        64_000,
        "V100M32",
        frozenset({"V100M32"}),
    )
    assert multi_gpu_demand_share(out) == pytest.approx(12_000 / 18_000)
    assert with_multi_gpu_demand(PODS, 0.6, [eight], np.random.default_rng(1)) == out  # seeded
    assert with_multi_gpu_demand(PODS, 0.2, [eight], np.random.default_rng(1)) == PODS  # already there


def test_more_sharing_draws_shares_from_the_file() -> None:
    out = with_share_pods(PODS, 0.5, PODS, np.random.default_rng(3))
    # 2 of 9 share; each replacement adds one: 5 of 9 = 0.556 >= 0.5 after 3
    assert sum(a != b for a, b in zip(PODS, out, strict=True)) == 3
    assert share_pod_fraction(out) == pytest.approx(5 / 9)
    assert all(p.gpu_milli == 500 for p in out if p.is_gpu_share)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: with_multi_gpu_demand(PODS, 1.0, PODS, np.random.default_rng(0)), "in [0, 1)"),
        (lambda: with_multi_gpu_demand(PODS, 0.9, PODS[:6], np.random.default_rng(0)), "no pods of two or more"),
        (lambda: with_multi_gpu_demand(PODS, 0.97, PODS, np.random.default_rng(0)), "out of whole one-GPU pods"),
        (lambda: with_share_pods(PODS, -0.1, PODS, np.random.default_rng(0)), "in [0, 1]"),
        (lambda: with_share_pods(PODS, 0.9, PODS[:6], np.random.default_rng(0)), "no pods that share"),
        (lambda: with_share_pods(PODS, 1.0, PODS, np.random.default_rng(0)), "out of whole one-GPU pods"),
    ],
)
def test_a_mix_out_of_reach_is_refused(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VariantError, match=re.escape(message)):
        call()


def test_written_pods_read_back_the_same(tmp_path: Path) -> None:
    pods = [*PODS, TracePod("bare", 1000, 2000, 1, 250)]  # no times, no qos
    write_pods(tmp_path / "p.csv", pods)
    assert load_pods(tmp_path / "p.csv").rows == pods


def test_cli_writes_a_variant_and_refuses_bad_asks(tmp_path: Path) -> None:
    src = tmp_path / "pods.csv"
    write_pods(src, PODS)
    out = tmp_path / "variant.csv"
    result = CliRunner().invoke(
        app, ["variant", "--pods", str(src), "--out", str(out), "--share-pods", "0.5", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "3 changed" in result.output and "0.222 -> 0.556" in result.output
    assert share_pod_fraction(load_pods(out).rows) == pytest.approx(5 / 9)
    nothing = CliRunner().invoke(app, ["variant", "--pods", str(src), "--out", str(out)])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output.replace("\n", "")
    too_much = CliRunner().invoke(app, ["variant", "--pods", str(src), "--out", str(out), "--share-pods", "1"])
    assert too_much.exit_code == 2 and "out of whole one-GPU pods" in too_much.output.replace("\n", "")
    missing = CliRunner().invoke(
        app, ["variant", "--pods", str(tmp_path / "nope.csv"), "--out", str(out), "--share-pods", "0.5"]
    )
    assert missing.exit_code == 2 and "nope.csv" in missing.output.replace("\n", "")


def test_cli_reports_bad_rows_of_the_pool_and_draws_from_the_good_ones(tmp_path: Path) -> None:
    src = tmp_path / "pods.csv"
    write_pods(src, PODS)
    pool = tmp_path / "pool.csv"
    pool.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
        "big-bad,-5,8000,8,1000\n"  # line 2: a negative size
        "big,64000,8000,8,1000\n"
    )
    out = tmp_path / "variant.csv"
    args = ["variant", "--pods", str(src), "--out", str(out), "--multi-gpu-demand", "0.6", "--seed", "1"]
    result = CliRunner().invoke(app, [*args, "--multi-gpu-from", str(pool)])
    assert result.exit_code == 0, result.output
    said = result.output.replace("\n", "")  # the console wraps long paths at its width
    assert "skipped" in said and "pool.csv:2" in said
    assert {p.cpu_milli for p in load_pods(out).rows if p.gpu_count == 8} == {64_000}
    refused = CliRunner().invoke(app, [*args, "--multi-gpu-from", str(pool), "--on-error", "reject"])
    assert refused.exit_code == 2 and "negative" in refused.output.replace("\n", "")
