"""Trace replay: departures free capacity, queue disciplines, pre-emption, the load knob, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ceti.cli.sim import app
from ceti.sim.replay import ReplaySetup, run_replay, scale_for_load, sub_cluster
from ceti.sim.trace import TraceError, TraceNode, TracePod


def node(name: str, gpus: int = 1, cpu: int = 8000) -> TraceNode:
    return TraceNode(name, cpu, 65536, gpus, "V100M16" if gpus else "")


def pod(name: str, t: int, dur: int, qos: str = "LS", gpus: int = 1, milli: int = 1000, cpu: int = 1000) -> TracePod:
    return TracePod(name, cpu, 1024, gpus, milli if gpus else 0, qos=qos, creation_time=t, deletion_time=t + dur,
                    scheduled_time=t)


def test_a_pod_waits_until_a_departure_frees_its_gpu() -> None:
    setup = ReplaySetup.build([node("n1")], [pod("a", 0, 100), pod("b", 10, 50)])
    r = run_replay(setup, "first-fit")
    ls = r.classes["LS"]
    assert ls.started == 2 and sorted(ls.queue_delays_s) == [0.0, 90.0]
    assert sorted(ls.completion_s) == [100.0, 140.0]
    assert r.preemptions == 0


def test_fifo_baselines_serve_arrival_order_and_fabric_serves_the_higher_class_first() -> None:
    # the GPU frees at t=100; a BE pod arrived before an LS pod
    pods = [pod("hold", 0, 100, qos="LS"), pod("be", 10, 10, qos="BE"), pod("ls", 20, 10, qos="LS")]
    setup = ReplaySetup.build([node("n1")], pods)
    fifo = run_replay(setup, "best-fit")
    assert fifo.classes["BE"].queue_delays_s == [90.0]
    assert sorted(fifo.classes["LS"].queue_delays_s) == [0.0, 90.0]
    ours = run_replay(setup, "fabric")
    assert sorted(ours.classes["LS"].queue_delays_s) == [0.0, 80.0]
    assert ours.classes["BE"].queue_delays_s == [100.0]


def test_fabric_preempts_best_effort_work_for_a_higher_class_and_reruns_it() -> None:
    pods = [pod("be", 0, 100, qos="BE"), pod("ls", 10, 20, qos="LS")]
    setup = ReplaySetup.build([node("n1")], pods)
    ours = run_replay(setup, "fabric")
    assert ours.preemptions == 1 and ours.classes["BE"].preempted == 1
    assert ours.classes["LS"].queue_delays_s == [0.0]
    # the BE pod starts over once the LS pod leaves at t=30 and runs its whole 100 s again
    assert ours.classes["BE"].completion_s == [130.0]
    assert run_replay(setup, "fgd").preemptions == 0


@pytest.mark.parametrize("name", ["live", "live:flow"])
def test_the_live_round_serves_the_higher_class_first_and_preempts_best_effort_work(name: str) -> None:
    """`live` runs the scheduling round itself at every change: QoS classes are priorities, best-effort pods are
    interruptible, and the round's own pre-emption makes room for a latency-sensitive pod."""
    pods = [pod("hold", 0, 100, qos="LS"), pod("be", 10, 10, qos="BE"), pod("ls", 20, 10, qos="LS")]
    live = run_replay(ReplaySetup.build([node("n1")], pods), name)
    assert sorted(live.classes["LS"].queue_delays_s) == [0.0, 80.0]  # the LS pod goes before the earlier BE pod
    assert live.classes["BE"].queue_delays_s == [100.0]
    pods = [pod("be", 0, 100, qos="BE"), pod("ls", 10, 20, qos="LS")]
    live = run_replay(ReplaySetup.build([node("n1")], pods), name)
    assert live.preemptions == 1 and live.classes["BE"].preempted == 1
    assert live.classes["LS"].queue_delays_s == [0.0]
    assert live.classes["BE"].completion_s == [130.0]  # starts over once the LS pod leaves at t=30


def test_latency_classes_are_never_preempted() -> None:
    pods = [pod("ls", 0, 100, qos="LS"), pod("g", 10, 20, qos="Guaranteed")]
    ours = run_replay(ReplaySetup.build([node("n1")], pods), "fabric")
    assert ours.preemptions == 0 and ours.classes["Guaranteed"].queue_delays_s == [90.0]


def test_load_compresses_arrivals_to_the_asked_peak() -> None:
    setup = ReplaySetup.build([node(f"n{i}") for i in range(4)], [pod(f"p{i}", i * 100, 50) for i in range(8)])
    # at full scale one pod runs at a time; a peak of 2 of the 4 GPUs needs arrivals at least twice as dense
    scale = scale_for_load(setup.replay, np.full(8, 1000), 4000, 0.5)
    assert 0.25 <= scale < 1.0
    busy = ReplaySetup.build([node(f"n{i}") for i in range(4)], [pod(f"p{i}", i * 100, 50) for i in range(8)], load=0.5)
    assert busy.time_scale == pytest.approx(scale)


def test_sub_cluster_keeps_the_mix_and_refuses_nonsense() -> None:
    nodes = [node(f"g{i}", gpus=8) for i in range(10)] + [node(f"c{i}", gpus=0) for i in range(10)]
    half = sub_cluster(nodes, 0.5)
    assert len(half) == 10 and sum(1 for n in half if n.gpu_count) == 5
    with pytest.raises(ValueError, match="fraction"):
        sub_cluster(nodes, 0)


def test_a_trace_without_times_cannot_be_replayed() -> None:
    with pytest.raises(TraceError, match="creation_time"):
        ReplaySetup.build([node("n1")], [TracePod("x", 1000, 1024, 1, 1000)])


def test_cli_replays_a_csv_and_prints_json(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,8000,65536,1,V100M16\nn2,8000,65536,1,V100M16\n")
    pods = tmp_path / "pods.csv"
    rows = [("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
            "scheduled_time")]
    for i in range(40):
        qos = "LS" if i % 2 else "BE"
        rows.append(f"p{i},1000,1024,1,1000,,{qos},Running,{i * 10},{i * 10 + 60},{i * 10}")
    pods.write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["replay", "--nodes", str(nodes), "--pods", str(pods), "--policy",
                                   "fgd,fabric,live", "--cluster-fraction", "1", "--load", "2", "--json", "--out",
                                   str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert set(payload["policies"]) == {"fgd", "fabric", "live"}
    assert payload["policies"]["live"]["classes"]["LS"]["never_started"] == 0
    assert payload["highest_class"] is None  # no class has the 30 pods a comparison needs
    ls = payload["policies"]["fabric"]["classes"]["LS"]
    assert ls["pods"] == 20 and ls["never_started"] == 0
    assert (out / "replay-pods.md").exists() and (out / "replay-utilization-pods.png").exists()


def test_cli_rejects_a_bad_load(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,8000,65536,1,V100M16\n")
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\np,1,1,0,0,0,5\n")
    res = CliRunner().invoke(app, ["replay", "--nodes", str(nodes), "--pods", str(pods), "--load", "-1"])
    assert res.exit_code == 2 and "load must be above 0" in res.output
