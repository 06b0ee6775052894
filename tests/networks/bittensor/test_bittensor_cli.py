"""`ceti networks bittensor` on the SDK's mock chain (`--network mock`: a small demonstration chain)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("bittensor.utils.mock", reason="the bittensor SDK (10.x) is not installed")

from ceti.cli.networks_bittensor import app

runner = CliRunner()
MOCK = ["--network", "mock", "--tao-usd", "400"]


def test_subnets_json_lists_estimates_best_first_and_reasons():
    result = runner.invoke(app, ["subnets", *MOCK, "--gpu-model", "H100-80GB", "--vram-mib", "81920", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["netuid"] for r in rows] == [4, 1, 9]
    assert rows[0]["ok"] and rows[0]["usd_per_hour"] > rows[1]["usd_per_hour"] > 0
    assert rows[0]["inputs"]["tao_usd"] == 400.0 and "USD/h" in rows[0]["detail"]
    assert not rows[2]["ok"] and "earning miner" in rows[2]["reason"]


def test_subnets_table_and_one_subnet_with_its_inputs():
    table = runner.invoke(app, ["subnets", *MOCK])
    assert table.exit_code == 0 and "USD/h net" in table.output and "best:" in table.output
    one = runner.invoke(app, ["estimate", "1", *MOCK, "--quantile", "0.25", "--json"])
    assert one.exit_code == 0, one.output
    data = json.loads(one.output)
    assert data["target"] == "subnet 1" and data["inputs"]["miner_quantile"] == 0.25


def test_unknown_subnet_and_bad_prices_are_errors_with_no_estimate():
    unknown = runner.invoke(app, ["estimate", "77", *MOCK, "--json"])
    assert unknown.exit_code == 1 and "subnet 77 does not exist on mock" in unknown.output
    for price in ("-3", "0", "1e12", "nan"):
        bad = runner.invoke(app, ["subnets", "--network", "mock", "--tao-usd", price, "--json"])
        assert bad.exit_code == 1 and "error:" in bad.output and "usd_per_hour" not in bad.output, (price, bad.output)
    down = runner.invoke(app, ["subnets", "--network", "mock", "--price-url", "http://127.0.0.1:9/price"])
    assert down.exit_code == 1 and "unreachable" in down.output
