"""Offline bounds for the inflation experiment: hand-worked optima, bounds above every online policy, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ceti.cli.sim import app
from ceti.fabric.placement.registry import make_policy
from ceti.fabric.placement.state import ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload
from ceti.sim.inflation_bound import (
    BoundError,
    _dff_values,
    large_shares_placed,
    packing_bound,
    relaxation_bound,
    sample_nodes,
    share_patterns,
    shares_placed,
    solve_offline,
    sub_instance,
)
from ceti.sim.trace import TraceNode, TracePod

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "alibaba-openb-2023"
BIG = 1 << 30


def _cluster(*nodes: tuple[str, str, int, int]) -> ClusterState:
    """(name, model, GPUs, CPU milli) per node; memory is never short."""
    return ClusterState.build(
        names=[n[0] for n in nodes],
        cpu_milli=[n[3] for n in nodes],
        memory_mib=[BIG] * len(nodes),
        gpu_models=[n[1] for n in nodes],
        gpu_free_milli=[[1000] * n[2] for n in nodes],
    )


def _replay(state: ClusterState, pods: list[PodRequest], placements) -> int:  # type: ignore[no-untyped-def]
    """Apply placements through ClusterState.allocate (which refuses anything infeasible); GPU milli placed."""
    s = state.copy_empty()
    used = 0
    for pod, pl in zip(pods, placements, strict=True):
        if pl is not None:
            s.allocate(pl[0], pod, pl[1])
            used += pod.gpu_milli_total
    return used


def test_shares_that_only_pair_one_way() -> None:
    # one GPU; 600 + 500 + 500 arriving in that order: online takes 600 and then nothing fits, offline 500 + 500
    state = _cluster(("a", "G2", 1, 8000))
    pods = [PodRequest(100, 1, 1, 600), PodRequest(100, 1, 1, 500), PodRequest(100, 1, 1, 500)]
    res = solve_offline(state, pods, time_limit=5)
    assert res.optimal and res.best_milli == res.upper_milli == 1000
    assert _replay(state, pods, res.placements) == 1000
    assert relaxation_bound(state, pods).upper_milli == pytest.approx(1000, abs=1e-3)


def test_cpu_model_and_whole_gpus_by_hand() -> None:
    # n1: 2 T4 GPUs, 4 cores; n2: 1 G2 GPU, 8 cores. Pods: two whole GPUs needing 3 cores each, two 500-milli
    # shares needing 1 core, a 600-milli share that only takes G2. Best: n2 holds one whole GPU, n1 the other
    # whole GPU plus one share (4 cores): 2500. (n2 holding the G2-only share loses: 600 + 1500.)
    state = _cluster(("n1", "T4", 2, 4000), ("n2", "G2", 1, 8000))
    g2_only = state.model_mask({"G2"})
    pods = [
        PodRequest(3000, 1, 1, 1000),
        PodRequest(3000, 1, 1, 1000),
        PodRequest(1000, 1, 1, 500),
        PodRequest(1000, 1, 1, 500),
        PodRequest(100, 1, 1, 600, g2_only),
        PodRequest(500, 1),  # a CPU pod: allocates no GPU
    ]
    res = solve_offline(state, pods, time_limit=5)
    assert res.optimal and res.best_milli == res.upper_milli == 2500
    assert _replay(state, pods, res.placements) == 2500
    assert relaxation_bound(state, pods).upper_milli >= 2500


def test_multi_gpu_pods_take_whole_gpus_of_one_node() -> None:
    # two nodes of 2 GPUs: a 3-GPU pod fits neither; two 2-GPU pods fill both
    state = _cluster(("a", "G2", 2, 8000), ("b", "G2", 2, 8000))
    pods = [PodRequest(100, 1, 3, 1000), PodRequest(100, 1, 2, 1000), PodRequest(100, 1, 2, 1000)]
    res = solve_offline(state, pods, time_limit=5)
    assert res.optimal and res.best_milli == 4000
    assert relaxation_bound(state, pods).upper_milli == pytest.approx(4000, abs=1e-3)


def test_dual_feasible_functions_hold_on_every_packing_of_one_gpu() -> None:
    sizes = [110, 160, 190, 230, 320, 470, 500, 650, 810]
    fs = _dff_values(sizes)
    rnd = random.Random(1)
    for _ in range(2000):
        held, room = [], 1000
        for s in rnd.sample(sizes * 5, len(sizes) * 5):
            if s <= room:
                held.append(s)
                room -= s
        for f in fs:
            assert sum(f[s] for s in held) <= 1000 + 1e-9
    assert all(f[1000] == 1000 for f in fs)


def _random_instance(rnd: random.Random) -> tuple[ClusterState, list[PodRequest]]:
    models = ["G2", "T4", "V100M16"]
    nodes = [
        (f"n{i:02d}", rnd.choice(models), rnd.choice([1, 2, 4, 8]), rnd.choice([8000, 16000, 32000]))
        for i in range(rnd.randint(2, 5))
    ]
    state = _cluster(*nodes)
    pods = []
    for _ in range(rnd.randint(5, 30)):
        cpu = rnd.choice([0, 1000, 2000, 4000, 8000])
        kind = rnd.random()
        mask = state.model_mask({rnd.choice(models)}) if rnd.random() < 0.3 else None
        if kind < 0.15:
            pods.append(PodRequest(cpu, 1))
        elif kind < 0.6:
            pods.append(PodRequest(cpu, 1, 1, rnd.choice([110, 190, 320, 470, 500, 650, 810]), mask))
        else:
            pods.append(PodRequest(cpu, 1, rnd.choice([1, 1, 2, 4]), 1000, mask))
    return state, pods


@pytest.mark.parametrize("seed", range(6))
def test_bounds_are_above_every_online_policy(seed: int) -> None:
    rnd = random.Random(seed)
    state, pods = _random_instance(rnd)
    workload = TargetWorkload.from_tasks((p.cpu_milli, p.gpu_milli, p.gpu_count, "") for p in pods)
    relax = relaxation_bound(state, pods).upper_milli
    best_online, best_pl = -1, None
    for name in ("first-fit", "best-fit", "fgd", "fabric"):
        s = state.copy_empty()
        policy = make_policy(name, workload)
        gen = np.random.default_rng(seed)
        placed = []
        for pod in pods:
            pl = policy.place(s, pod, gen)
            if pl is not None:
                s.allocate(pl[0], pod, pl[1])
            placed.append(pl)
        used = s.used_gpu_milli()
        assert used <= relax + 1e-6
        if used > best_online:
            best_online, best_pl = used, placed
    res = solve_offline(state, pods, time_limit=5, hint=best_pl)
    assert best_online <= res.best_milli <= res.upper_milli
    assert res.upper_milli <= int(relax) + 1 or not res.optimal
    assert _replay(state, pods, res.placements) == res.best_milli


def test_bad_input() -> None:
    state = _cluster(("a", "G2", 1, 8000))
    pod = PodRequest(100, 1, 1, 500)
    with pytest.raises(BoundError):
        solve_offline(state, [pod], time_limit=0)
    with pytest.raises(BoundError):
        solve_offline(state, [pod], time_limit=1, hint=[])
    busy = state.copy_empty()
    busy.allocate(0, pod, (0,))
    with pytest.raises(BoundError):
        relaxation_bound(busy, [pod])
    with pytest.raises(BoundError):
        solve_offline(busy, [pod])
    nodes = [TraceNode("a", 8000, 1000, 1, "G2")]
    with pytest.raises(BoundError):
        sample_nodes(nodes, 0.0, np.random.default_rng(0))
    with pytest.raises(BoundError):
        sample_nodes(nodes, 1.5, np.random.default_rng(0))
    with pytest.raises(BoundError):
        sub_instance(nodes, [], 42)
    with pytest.raises(BoundError):
        sub_instance([TraceNode("c", 8000, 1000, 0, "")], [TracePod("p", 1, 1, 1, 500)], 42)


def test_sub_instance_keeps_node_types_and_stops_at_capacity() -> None:
    nodes = [TraceNode(f"g{i:03d}", 96000, 1 << 20, 8, "G2") for i in range(40)]
    nodes += [TraceNode(f"t{i:03d}", 32000, 1 << 20, 2, "T4") for i in range(20)]
    pods = [TracePod(f"p{i}", 1000, 10, 1, [250, 500, 1000][i % 3]) for i in range(600)]
    inst = sub_instance(nodes, pods, 7, 0.25)
    assert sum(n.gpu_model == "G2" for n in inst.nodes) == 10
    assert sum(n.gpu_model == "T4" for n in inst.nodes) == 5
    assert 0 < inst.arrived_milli <= inst.capacity_milli
    assert inst.arrived_milli > inst.capacity_milli - 1000  # cut at the last arrival that stays within 100%


def test_cli_bound_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    if DATA.is_dir():
        rnd = random.Random(3)
        node_lines = (DATA / "openb_node_list_gpu_node.csv").read_text().splitlines()
        pod_lines = (DATA / "openb_pod_list_default.csv").read_text().splitlines()
        nodes = tmp_path / "nodes.csv"
        pods = tmp_path / "pods.csv"
        nodes.write_text("\n".join([node_lines[0], *rnd.sample(node_lines[1:], 60)]) + "\n")
        pods.write_text("\n".join([pod_lines[0], *rnd.sample(pod_lines[1:], 400)]) + "\n")
        args = [
            "bound",
            "--nodes",
            str(nodes),
            "--pods",
            str(pods),
            "--fraction",
            "0.3",
            "--seeds",
            "1",
            "--time-limit",
            "1",
            "--json",
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout.strip().splitlines()[-1])
        sub = payload["sub_instances"][0]
        assert sub["unallocated_lower_bound"] <= sub["unallocated_offline_best"] + 1e-9
        for v in sub["unallocated_online"].values():
            assert sub["unallocated_offline_best"] <= v + 1e-9
        assert payload["full_cluster"][0]["unallocated_lower_bound"] >= 0
        # each floor asks more of a placement than the one before, and the policy it keeps meets it
        (keeper, large), (keeper_all, every) = (
            *sub["unallocated_relaxation_keeping_large_shares_of"].items(),
            *sub["unallocated_relaxation_keeping_shares_of"].items(),
        )
        assert keeper == keeper_all
        assert sub["unallocated_lower_bound"] <= large + 1e-6 <= every + 2e-6
        assert every <= sub["unallocated_online"][keeper] + 1e-6
        table = runner.invoke(app, args[:-1] + ["--no-full"])
        assert table.exit_code == 0, table.output
        assert "bound" in table.stdout
        bad = runner.invoke(app, ["bound", "--nodes", str(nodes), "--pods", str(pods), "--fraction", "0"])
        assert bad.exit_code == 2
    missing = runner.invoke(
        app, ["bound", "--nodes", str(tmp_path / "no.csv"), "--pods", str(tmp_path / "no.csv")]
    )
    assert missing.exit_code == 2


def test_shares_placed_by_size_and_the_large_ones() -> None:
    pods = [PodRequest(0, 0, 1, m) for m in (810, 470, 470, 500, 650)] + [PodRequest(0, 0, 1, 1000)]
    placed = [(0, (0,)), (0, (1,)), None, (1, (0,)), (1, (1,)), (2, (0,))]
    assert shares_placed(pods, placed) == {810: 1, 470: 1, 500: 1, 650: 1}
    assert large_shares_placed(pods, placed) == {810: 1, 650: 1}  # above half a GPU; 500 is not


def test_packing_bound_sees_leftovers_no_share_fills() -> None:
    # 4 GPUs, four 810-milli shares and six 300-milli ones: a 300 never fits beside an 810, three 300s fill a
    # GPU to 900. Best: two GPUs of one 810, two of three 300s = 3420 (four 810s: 3240; three: 3330)
    pods = [PodRequest(0, 0, 1, 810)] * 4 + [PodRequest(0, 0, 1, 300)] * 6
    assert packing_bound(4, pods) == pytest.approx(3420, abs=1e-3)
    # placing at least three 810s, as an online policy might have: 3330
    assert packing_bound(4, pods, {810: 3}) == pytest.approx(3330, abs=1e-3)
    state = _cluster(*((f"n{i}", "G2", 1, 64000) for i in range(4)))
    assert relaxation_bound(state, pods).upper_milli == pytest.approx(3420, abs=1e-3)
    assert {810: 1} in share_patterns([810, 300]) and {300: 3} in share_patterns([810, 300])
    assert all(sum(s * c for s, c in p.items()) <= 1000 for p in share_patterns([50, 110, 470, 810]))
