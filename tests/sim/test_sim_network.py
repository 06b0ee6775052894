"""`ceti sim network`: back-fill, pre-emption for developer work, failures, the LP bound, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ceti.cli.sim_network import network
from ceti.fabric.model import GPU, Demand, Node
from ceti.sim.network import NetworkSim, run_network
from ceti.sim.network_bound import upper_bound
from ceti.sim.network_world import DevJob, NetworkSimError, SimNode, World, build_world

H = 3600.0


def sim_node(i: int, gpus: int = 4, model: str = "G2", up: list[tuple[float, float]] | None = None,
             ask: float = 0.3) -> SimNode:
    node = Node(f"n{i:05d}", 96000, 393216, tuple(GPU(g, model) for g in range(gpus)), region="us-east",
                price_per_gpu_hour=ask)
    return SimNode(i, node, model, gpus, 72.0, up if up is not None else [(0.0, 1e9)])


def dev_job(i: int, at: float, gpus: int = 1, run_s: float = H, bid: float = 2.0, priority: int = 50) -> DevJob:
    return DevJob(f"d{i:06d}", i, at, Demand(4000, 16384, gpu_count=gpus), 1, run_s, bid * gpus, priority,
                  "normal", False)


def world(nodes: list[SimNode], jobs: list[DevJob], hours: float = 2.0, capacity: int = 1000) -> World:
    return World(nodes, jobs, hours * H, {"bittensor": capacity, "render": capacity, "akash": capacity}, 0.0, 0.0,
                 "test")


def test_backfill_fills_every_idle_gpu_in_the_first_round() -> None:
    w = world([sim_node(0, 8), sim_node(1, 4, "T4", ask=0.1)], [])
    sim = NetworkSim(w, policy="fabric")
    sim.step_to(0.0)
    assert sim.gpu_up == 12 and sim.gpu_net == 12 and sim.gpu_dev == 0
    # tasks that end are replaced at the next round: idle is only the time between an end and that round
    r = sim.run()
    assert r.idle_share < 0.01
    assert r.value_network > 0 and r.value_developer == 0


def test_network_work_goes_only_where_its_revenue_covers_the_ask() -> None:
    w = world([sim_node(0, 4, "T4", ask=5.0)], [])  # no network pays $5 per T4-hour
    sim = NetworkSim(w, policy="fabric")
    sim.step_to(0.0)
    assert sim.gpu_net == 0


def test_developer_arrival_preempts_network_work_and_starts_within_one_round() -> None:
    w = world([sim_node(0, 8)], [dev_job(0, 90.0, gpus=8)])
    sim = NetworkSim(w, policy="fabric", round_s=60)
    sim.step_to(60.0)
    assert sim.gpu_net == 8
    sim.step_to(120.0)  # the first round after the arrival
    assert sim.gpu_dev == 8 and sim.gpu_net == 0
    assert sim.preempted_net == 8
    assert sim.wait_s == [30.0]


def test_without_preemption_the_developer_waits_for_network_work_to_end() -> None:
    w = world([sim_node(0, 8)], [dev_job(0, 90.0, gpus=8)])
    sim = NetworkSim(w, policy="fcfs", round_s=60)
    sim.step_to(60.0)
    sim.step_to(120.0)
    assert sim.gpu_dev == 0 and sim.preempted_net == 0


def test_node_failure_loses_work_since_the_checkpoint_and_the_job_is_retried() -> None:
    # node 0 fails at 40 minutes; node 1 joins at 10 minutes, after the job started on node 0
    nodes = [sim_node(0, 1, up=[(0.0, 2400.0)]), sim_node(1, 1, up=[(600.0, 1e9)])]
    w = world(nodes, [dev_job(0, 0.0, run_s=2 * H)], hours=3.0)
    sim = NetworkSim(w, policy="no-backfill", network_demand=False, round_s=60)
    sim.step_to(0.0)
    assert sim.runs["d000000"].tasks[0].node == 0
    sim.step_to(2400.0)  # the failure, then the round at the same time: retried at once on node 1
    assert sim.failures == 1 and sim.runs["d000000"].tasks[0].node == 1
    state = sim.dev_state["d000000"]
    assert state.attempts == 2 and state.remaining_s == pytest.approx(2 * H - 1800)
    r = sim.run()
    assert r.node_failures == 1 and r.runs_lost_to_failures == 1
    # 40 minutes ran, 30 were checkpointed: 10 minutes of one GPU lost
    assert r.developer_gpu_hours_lost_to_failures == pytest.approx(10 / 60)
    assert sim.dev_state == {}  # finished after the retry on node 1
    assert r.jobs_finished == 1 and r.jobs_started == 1
    assert r.value_developer == pytest.approx(2 * 2.0)  # two hours of kept work at $2/h


def test_lp_bound_is_at_least_the_value_every_policy_captures() -> None:
    w = build_world(nodes=12, hours=3, seed=3, load=0.9)
    results = run_network(w, network_demand=True, round_s=120, seed=3)
    assert set(results) == {"fabric", "no-backfill", "fcfs"}
    for r in results.values():
        assert r.upper_bound is not None and r.upper_bound >= r.value_total - 1e-6
    assert upper_bound(w, network_demand=True) >= upper_bound(w, network_demand=False)


def test_same_seed_same_results() -> None:
    a = run_network(build_world(nodes=8, hours=1, seed=5), round_s=120, bound=False)
    b = run_network(build_world(nodes=8, hours=1, seed=5), round_s=120, bound=False)
    assert {k: v.as_json() for k, v in a.items()} == {k: v.as_json() for k, v in b.items()}


def test_the_fabric_places_as_the_server_is_told() -> None:
    """`placement` is the server's CETI_PLACEMENT: a placement policy on rounds small enough, or the class flow.
    Both run the same world to the end; an unknown one is refused."""
    w = build_world(nodes=8, hours=1, seed=5)
    by = {p: run_network(w, round_s=120, bound=False, placement=p)["fabric"].as_json() for p in ("fabric", "flow")}
    for r in by.values():
        assert r["jobs_started"] > 0 and r["idle_share"] < 0.05
    with pytest.raises(NetworkSimError, match="unknown placement 'best'"):
        NetworkSim(w, placement="best")


def test_bad_world_arguments_raise_one_line_errors() -> None:
    with pytest.raises(NetworkSimError, match="--nodes"):
        build_world(nodes=0)
    with pytest.raises(NetworkSimError, match="--hours"):
        build_world(hours=-1)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """sim"""

    app.command()(network)
    return app


@pytest.mark.parametrize(
    "args, words",
    [
        (["--nodes", "0"], "--nodes"),
        (["--network-demand", "maybe"], "--network-demand"),
        (["--round-s", "0"], "--round-s"),
        (["--hours", "0"], "--hours"),
        (["--placement", "best"], "--placement"),
        ([], "--synthetic"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args: list[str], words: str) -> None:
    synthetic = [] if not args else ["--synthetic"]
    res = CliRunner().invoke(_app(), ["network", *synthetic, *args])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]


def test_cli_json_and_report(tmp_path: Path) -> None:
    args = ["network", "--synthetic", "--nodes", "6", "--hours", "1", "--round-s", "120", "--processes", "1",
            "--json", "--out", str(tmp_path)]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output.strip().splitlines()[-1])
    fabric = payload["policies"]["fabric"]
    assert set(payload["policies"]) == {"fabric", "no-backfill", "fcfs"}
    assert fabric["upper_bound_per_hour"] >= fabric["value_per_hour"]
    assert fabric["idle_share"] < payload["policies"]["no-backfill"]["idle_share"]
    assert (tmp_path / "network.md").read_text().startswith("# Network simulation")
    assert (tmp_path / "network-gpu-use.png").stat().st_size > 1000
    table = CliRunner().invoke(_app(), args[:-3])
    assert table.exit_code == 0 and "fabric" in table.output
