"""`ceti networks render`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ceti.cli.networks_render import app

runner = CliRunner()


def test_estimate_shows_score_rate_and_revenue():
    result = runner.invoke(app, ["estimate", "--gpu-model", "A100-40GB", "--obh-rate", "0.005", "--gpus", "4",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["usd_per_hour"] == 446 * 4 * 0.005
    assert data["inputs"]["octanebench_per_gpu"] == 446 and data["inputs"]["gpu_count"] == 4
    measured = runner.invoke(app, ["estimate", "--gpu-model", "H100-80GB", "--obh-rate", "0.01", "--score", "900"])
    assert measured.exit_code == 0 and "9.0000 USD/h" in measured.output


def test_estimate_errors():
    for args, message in [
        (["--gpu-model", "H100-80GB", "--obh-rate", "0.01"], "no OctaneBench score on file"),
        (["--gpu-model", "RTX 4090", "--obh-rate", "-0.01"], "above zero"),
        (["--gpu-model", "RTX 4090", "--obh-rate", "3"], "sanity limit"),
        (["--gpu-model", "RTX 4090", "--obh-rate", "0.01", "--tier", "gold"], "unknown Render tier"),
        (["--gpu-model", "RTX 4090", "--obh-rate", "0.01", "--score", "-5"], "measured OctaneBench score"),
    ]:
        result = runner.invoke(app, ["estimate", *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)


def test_command_and_scores():
    ok = runner.invoke(app, ["command", "shots/a.blend", "--start", "1", "--end", "24", "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.output) == ["blender", "-b", "shots/a.blend", "-E", "CYCLES", "-o", "frames/frame_####",
                                     "-F", "PNG", "-s", "1", "-e", "24", "-a"]
    bad = runner.invoke(app, ["command", "shots/a.blend", "--start", "24", "--end", "1"])
    assert bad.exit_code == 1 and "start is after end" in bad.output
    scores = runner.invoke(app, ["scores", "--json"])
    assert scores.exit_code == 0 and json.loads(scores.output)["A100"]["score"] == 446
