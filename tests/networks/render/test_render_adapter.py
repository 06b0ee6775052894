"""The Render adapter: revenue = OctaneBench score x OBh rate, and a real Blender render as the workload."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ceti.networks.base import NetworkError, NodeClass
from ceti.networks.render import RenderAdapter, RenderConfig, RenderJob, per_gpu_score
from ceti.networks.render.pricing import score_table

RTX4090_X2 = NodeClass(gpu_model="RTX 4090", gpu_count=2, vram_mib=24_576, cpus=16, memory_mib=65_536)
A100 = NodeClass(gpu_model="A100-40GB", gpu_count=1, vram_mib=40_960, cpus=16, memory_mib=131_072)
H100 = NodeClass(gpu_model="H100-80GB", gpu_count=1, vram_mib=81_920, cpus=16, memory_mib=131_072)
RATES = {"economy": 0.005, "priority": 0.01}

# What the default template must run for the job below: recorded from Blender's command-line documentation
# (scene right after -b; output, engine, format and frame range before -a).
RECORDED_COMMAND = ["blender", "-b", "scenes/tiny.blend", "-E", "CYCLES", "-o", "frames/frame_####", "-F", "PNG",
                    "-s", "1", "-e", "3", "-a"]


def job(**fields) -> RenderJob:
    fields = {"job_id": "job-1", "scene": "scenes/tiny.blend", "frame_start": 1, "frame_end": 3, **fields}
    return RenderJob(**fields)


# --- revenue --------------------------------------------------------------------------------------------------------

def test_revenue_is_benchmark_score_times_obh_rate_with_inputs_shown():
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES, priority_admitted=True))
    best, economy = a.estimate_revenue(RTX4090_X2)
    assert (best.target, economy.target) == ("priority", "economy")
    per_gpu = score_table()["RTX 4090"]["score"]
    assert best.usd_per_hour == pytest.approx(per_gpu * 2 * 0.01)
    assert economy.usd_per_hour == pytest.approx(per_gpu * 2 * 0.005)
    assert economy.inputs["octanebench_per_gpu"] == per_gpu and economy.inputs["gpu_count"] == 2
    assert economy.inputs["obh_rate_usd"] == 0.005 and economy.inputs["obh_per_credit"] == 200.0
    assert "OctaneBench" in str(economy.inputs["octanebench_source"])
    assert "USD/OBh" in economy.detail


def test_every_score_on_file_names_its_source():
    for model, entry in score_table().items():
        assert entry["score"] > 0 and entry["source"], model


def test_memory_variants_share_their_chip_score_and_a_measured_score_wins():
    assert per_gpu_score("A100-40GB")[0] == per_gpu_score("A100-80GB")[0] == 446
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES, measured_scores={"H100-80GB": 900.0}))
    (estimate,) = a.estimate_revenue(H100)
    assert estimate.inputs["octanebench_source"] == "measured"
    assert estimate.usd_per_hour == pytest.approx(900 * 0.005)


def test_unknown_gpu_without_a_measurement_has_no_estimate():
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES))
    assert a.estimate_revenue(H100) == []
    with pytest.raises(NetworkError, match="no OctaneBench score on file for H100-80GB"):
        a.estimate(H100, "economy")


def test_tiers_follow_the_network_minimum_and_admission():
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES))
    assert [e.target for e in a.estimate_revenue(A100)] == ["economy"]  # not admitted to priority
    small = NodeClass("RTX 4090", 1, 24_576, 8, 16_384)  # 16 GB of RAM: below the 32 GB minimum
    assert a.estimate_revenue(small) == []
    cpu = NodeClass(None, 0, 0, 64, 262_144)
    assert a.estimate_revenue(cpu) == []
    floor = NodeClass("A100-40GB", 1, 40_960, 16, 131_072, floor_price_per_hour=10.0)
    assert a.estimate_revenue(floor) == []  # 446 x 0.005 = 2.23 USD/h is below the provider's floor


@pytest.mark.parametrize(("rate", "message"), [
    (-0.01, "above zero"), (0, "above zero"), (math.nan, "above zero"), (math.inf, "above zero"),
    (True, "above zero"), ("0.01", "above zero"), (5.0, "sanity limit"),
])
def test_negative_or_absurd_rates_are_refused(rate, message):
    with pytest.raises(NetworkError, match=message):
        RenderConfig(obh_rate_usd={"economy": rate})


def test_rate_from_the_token_price_and_a_bad_token_price_source():
    a = RenderAdapter(RenderConfig(token_price=lambda: 4.0, priority_admitted=True))
    rates = {e.target: e.inputs["obh_rate_usd"] for e in a.estimate_revenue(A100)}
    assert rates == {"priority": pytest.approx(0.04), "economy": pytest.approx(0.02)}

    def down():
        raise TimeoutError("feed down")

    for source, message in [(down, "price source failed"), (lambda: "n/a", "not a number"),
                            (lambda: -4.0, "above zero"), (lambda: 1e9, "sanity limit")]:
        with pytest.raises(NetworkError, match=message):
            RenderAdapter(RenderConfig(token_price=source)).estimate_revenue(A100)
    with pytest.raises(NetworkError, match="OBh rate per tier or a RENDER token price"):
        RenderConfig()
    with pytest.raises(NetworkError, match="unknown Render tier 'gold'"):
        RenderConfig(obh_rate_usd={"gold": 0.01})


# --- jobs and the command line --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "message"), [
    ({"frame_start": 5, "frame_end": 2}, "start is after end"),
    ({"frame_start": -1}, "frame_start -1"),
    ({"frame_end": 2_000_000}, "frame_end 2000000"),
    ({"frame_end": 3.5}, "whole frame number"),
    ({"frame_start": True}, "whole frame number"),
    ({"engine": "OCTANE"}, "engine 'OCTANE'"),
    ({"format": "GIF"}, "format 'GIF'"),
    ({"scene": "scene.txt"}, "must be a .blend file"),
    ({"scene": "../other/scene.blend"}, "not safe"),
    ({"scene": "--python-expr=x.blend"}, "not safe"),
    ({"scene": "a b.blend"}, "not safe"),
    ({"output": "frames/$(id)"}, "not safe"),
    ({"tier": "gold"}, "unknown Render tier"),
])
def test_bad_jobs_are_refused(fields, message):
    with pytest.raises(NetworkError, match=message):
        job(**fields)


@pytest.mark.parametrize(("template", "message"), [
    (["blender", "-b", "{scene}", "-s", "{start}", "-e", "{end}", "-P", "{script}"], r"unknown placeholder\(s\) \{script\}"),
    (["blender", "-s", "{start}", "-e", "{end}", "-a"], r"must use \{scene\}"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(NetworkError, match=message):
        RenderConfig(obh_rate_usd=RATES, command=template)


def test_workload_runs_the_recorded_blender_command_line():
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES), [job()])
    (estimate,) = a.estimate_revenue(A100)
    spec = a.workload(A100, estimate)
    assert spec.command == RECORDED_COMMAND
    assert spec.interruptible and spec.priority < 50
    assert spec.resources.gpus.count == 1 and spec.resources.gpus.models == ["A100-40GB"]
    assert a.capacity() == 1
    with pytest.raises(NetworkError, match="no priority render job is waiting"):
        a.next_job("priority")


def test_health_reads_blender_output():
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES))
    assert a.check_health("r", "Fra:1 Mem:9.90M | Time:00:00.05 | Rendering", None).healthy
    assert a.check_health("r", "Saved: 'frames/frame_0003.png'\nBlender quit", 0) == \
        a.check_health("r", "Blender quit", 0)
    bad = a.check_health("r", "Error: Cannot read file '/x/scene.blend': No such file or directory\nBlender quit", 0)
    assert not bad.healthy and "Cannot read file" in bad.reason
    assert not a.check_health("r", "", 139).healthy


# --- a real render ---------------------------------------------------------------------------------------------------

TINY_SCENE = """
import bpy, sys
scene = bpy.context.scene
scene.render.engine = 'CYCLES'
scene.cycles.device = 'CPU'
scene.cycles.samples = 1
scene.cycles.use_denoising = False
scene.render.resolution_x = 32
scene.render.resolution_y = 32
scene.render.resolution_percentage = 100
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_blender_renders_a_tiny_scene_for_a_few_frames(tmp_path: Path):
    """Renders for real when Blender is installed; without it only the recorded command line above is checked."""
    blender = shutil.which("blender")
    if blender is None:
        pytest.skip("blender is not installed: checked the recorded command line only "
                    "(test_workload_runs_the_recorded_blender_command_line)")
    (tmp_path / "scenes").mkdir()
    subprocess.run([blender, "-b", "--factory-startup", "--python-expr", TINY_SCENE, "--",
                    str(tmp_path / "scenes" / "tiny.blend")], check=True, capture_output=True, timeout=60)
    a = RenderAdapter(RenderConfig(obh_rate_usd=RATES), [job()])
    spec = a.workload(A100, a.estimate(A100, "economy"))
    assert spec.command == RECORDED_COMMAND
    started = time.monotonic()
    # Blender resolves relative paths against $PWD when it is set, not the process's working directory
    env = {**os.environ, "PWD": str(tmp_path)}
    done = subprocess.run(spec.command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    print(f"rendered 3 frames with {blender} in {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    frames = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert frames == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert a.check_health(spec.name, done.stdout[-4000:], done.returncode).healthy
