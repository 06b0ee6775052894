"""The floor for policies that place every pod that fits: hand-worked cases, and no policy of the experiment
ever below it, per arrival and in the experiment's own reading."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ceti.cli.sim import app
from ceti.fabric.placement.registry import POLICIES, make_policy
from ceti.fabric.placement.state import ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload
from ceti.sim.fit_rule_bound import cover_shape, covers, fit_rule_bound, reading_floor
from ceti.sim.inflation import InflationSetup, run_inflation
from ceti.sim.inflation_bound import BoundError, packing_bound
from ceti.sim.trace import TraceNode, TracePod, write_pods

BIG = 1 << 30
ANY = frozenset({0, 1, 2})


def _cluster(gpus: list[int], cpu: int = 64000) -> ClusterState:
    return ClusterState.build(
        names=[f"n{i:02d}" for i in range(len(gpus))],
        cpu_milli=[cpu] * len(gpus),
        memory_mib=[BIG] * len(gpus),
        gpu_models=["G2"] * len(gpus),
        gpu_free_milli=[[1000] * g for g in gpus],
    )


def test_what_a_placed_pod_proves_about_earlier_ones() -> None:
    whole2 = (8000, 100, 2, 1000, ANY)
    assert covers(whole2, (8000, 100, 1, 810, ANY))  # a share fits in an idle GPU
    assert covers(whole2, (4000, 50, 2, 1000, ANY))  # as many idle GPUs, less CPU and memory
    assert not covers(whole2, (4000, 50, 4, 1000, ANY))  # more GPUs than w found idle
    assert not covers(whole2, (9000, 100, 1, 500, ANY))  # more CPU
    assert not covers(whole2, (8000, 200, 1, 500, ANY))  # more memory
    share = (4000, 100, 1, 470, ANY)
    assert covers(share, (4000, 100, 1, 320, ANY))  # a smaller share, in the room the 470 took
    assert not covers(share, (4000, 100, 1, 650, ANY))
    assert not covers(share, (1000, 10, 1, 1000, ANY))  # a share never proves an idle GPU
    # models: the earlier pod must accept every model the later one may have landed on
    assert covers((1000, 1, 1, 1000, frozenset({1})), (1000, 1, 1, 500, ANY))
    assert not covers((1000, 1, 1, 1000, ANY), (1000, 1, 1, 500, frozenset({1})))
    assert not covers((1000, 1, 0, 0, ANY), (1000, 1, 0, 0, ANY))  # CPU-only pods are not in the LP
    state = _cluster([1])
    assert cover_shape(PodRequest(1, 2, 1, 500), len(state.models)) == (1, 2, 1, 500, frozenset({0, 1}))
    assert cover_shape(PodRequest(1, 2, 1, 500, state.model_mask({"G2"})), 2)[4] == frozenset({1})


def test_an_810_share_before_a_whole_gpu_pod_on_one_gpu() -> None:
    share, whole = PodRequest(1000, 10, 1, 810), PodRequest(2000, 10, 1, 1000)
    # any placement leaves the share out for the whole GPU (1000). Under the rule, the whole pod placed means
    # the share was placed first: x_whole <= x_share, x_share + x_whole <= 1 GPU; the LP's best is half of
    # each (905), the policies' 810
    assert packing_bound(1, [share, whole]) == pytest.approx(1000, abs=1e-3)
    assert fit_rule_bound(1, [share, whole], 2).upper_milli == pytest.approx(905, abs=1e-3)
    # in the other order the whole pod takes the GPU and the share finds no room
    assert fit_rule_bound(1, [whole, share], 2).upper_milli == pytest.approx(1000, abs=1e-3)
    # a share asking more CPU than the whole pod may have found no node with that CPU
    hungry = PodRequest(4000, 10, 1, 810)
    assert fit_rule_bound(1, [hungry, whole], 2).upper_milli == pytest.approx(1000, abs=1e-3)


def test_a_pod_placed_late_forces_every_covered_share_before_it() -> None:
    # 2 GPUs: three 810s, then two 1-GPU pods. Any placement: the two whole pods (2000). Every policy: two
    # 810s (1620). The LP: x1 >= x2 >= x3 >= y1 >= y2 (the chains and the cover), at most 2 GPUs; best all
    # at 0.4: 0.4 x (3 x 810 + 2 x 1000) = 1772
    pods = [PodRequest(1000, 10, 1, 810)] * 3 + [PodRequest(2000, 10, 1, 1000)] * 2
    assert packing_bound(2, pods) == pytest.approx(2000, abs=1e-3)
    got = fit_rule_bound(2, pods, 2)
    assert got.upper_milli == pytest.approx(1772, abs=1e-3)
    # rows: the 810s' chain (2), the first whole pod to the last 810, the second to the first; its row to the
    # last 810 follows from those two
    assert got.pods == 5 and got.implications == 4
    state = _cluster([2])
    for name in POLICIES:
        s = state.copy_empty()
        policy = make_policy(name, TargetWorkload.from_tasks([(1000, 810, 1, ""), (2000, 1000, 1, "")]))
        for pod in pods:
            pl = policy.place(s, pod, np.random.default_rng(0))
            if pl is not None:
                s.allocate(pl[0], pod, pl[1])
        assert s.used_gpu_milli() == 1620, name


def _random_instance(rnd: random.Random) -> tuple[ClusterState, list[PodRequest]]:
    models = ["G2", "T4"]
    n = rnd.randint(2, 5)
    state = ClusterState.build(
        names=[f"n{i}" for i in range(n)],
        cpu_milli=[rnd.choice([8000, 16000, 32000]) for _ in range(n)],
        memory_mib=[rnd.choice([16000, 64000]) for _ in range(n)],
        gpu_models=[rnd.choice(models) for _ in range(n)],
        gpu_free_milli=[[1000] * rnd.choice([1, 2, 4, 8]) for _ in range(n)],
    )
    pods = []
    for _ in range(rnd.randint(5, 40)):
        cpu, mem = rnd.choice([0, 1000, 2000, 4000, 8000]), rnd.choice([1000, 4000, 16000])
        mask = state.model_mask({rnd.choice(models)}) if rnd.random() < 0.2 else None
        kind = rnd.random()
        if kind < 0.1:
            pods.append(PodRequest(cpu, mem))
        elif kind < 0.65:
            pods.append(PodRequest(cpu, mem, 1, rnd.choice([160, 320, 470, 650, 810]), mask))
        else:
            pods.append(PodRequest(cpu, mem, rnd.choice([1, 1, 2, 8]), 1000, mask))
    return state, pods


@pytest.mark.parametrize("seed", range(8))
def test_no_policy_allocates_more_than_the_floor_allows(seed: int) -> None:
    rnd = random.Random(seed)
    state, pods = _random_instance(rnd)
    total = int(state.gpu_count.sum())
    bound = fit_rule_bound(total, pods, len(state.models)).upper_milli
    assert bound <= packing_bound(total, pods) + 1e-3  # the rule only takes placements away
    workload = TargetWorkload.from_tasks((p.cpu_milli, p.gpu_milli, p.gpu_count, "") for p in pods)
    for name in POLICIES:
        s = state.copy_empty()
        policy = make_policy(name, workload)
        gen = np.random.default_rng(seed)
        for k, pod in enumerate(pods):
            pl = policy.place(s, pod, gen)
            if pl is not None:
                s.allocate(pl[0], pod, pl[1])
            # at every arrival, not only the last
            assert s.used_gpu_milli() <= fit_rule_bound(total, pods[: k + 1], len(state.models)).upper_milli
        assert s.used_gpu_milli() <= bound, name


def _small_trace() -> tuple[list[TraceNode], list[TracePod]]:
    rnd = random.Random(5)
    nodes = [
        TraceNode(
            f"node-{i:02d}",
            rnd.choice([16000, 32000, 96000]),
            rnd.choice([65536, 262144]),
            rnd.choice([2, 4, 8, 8]),
            rnd.choice(["G2", "T4"]),
        )
        for i in range(40)
    ]
    pods = []
    for i in range(400):
        kind = rnd.random()
        cpu, mem = rnd.choice([2000, 4000, 8000, 16000]), rnd.choice([4096, 16384, 49152])
        if kind < 0.1:
            pods.append(TracePod(f"pod-{i}", cpu, mem, 0, 0))
        elif kind < 0.8:
            pods.append(TracePod(f"pod-{i}", cpu, mem, 1, rnd.choice([160, 320, 470, 650, 810])))
        else:
            pods.append(TracePod(f"pod-{i}", cpu, mem, rnd.choice([1, 1, 1, 2, 8]), 1000))
    return nodes, pods


def _small_setup() -> InflationSetup:
    return InflationSetup.build(*_small_trace())


def test_the_reading_floor_is_below_every_policy_of_the_experiment() -> None:
    setup = _small_setup()
    calls = []
    floor = reading_floor(setup, 42, checkpoints=3, progress=lambda: calls.append(1))
    first, last = floor.band
    assert last >= first + 2 and len(calls) == len(floor.checkpoints) >= 3
    assert floor.checkpoints[0][0] == first and floor.checkpoints[-1][0] == last
    assert [u for _, u in floor.checkpoints] == sorted(
        u for _, u in floor.checkpoints
    )  # more arrived, more room
    assert 0 <= floor.unallocated_reading <= floor.total_gpus
    for name in POLICIES:
        run = run_inflation(setup, name, 42, stop_at_percent=102)
        assert run.unallocated_gpus_at(100) >= floor.unallocated_reading - 1e-9, name
    assert floor.as_json()["unallocated_floor_reading"] == round(floor.unallocated_reading, 3)


def test_bad_input() -> None:
    setup = _small_setup()
    with pytest.raises(BoundError):
        reading_floor(setup, 42, checkpoints=1)
    cpu_only = InflationSetup.build([TraceNode("c", 8000, 1000, 0, "")], [TracePod("p", 1, 1, 1, 500)])
    with pytest.raises(BoundError):
        reading_floor(cpu_only, 42)
    # two GPUs and pods of one GPU: arrived shares of 50%, 100% and 150%, none rounding to 99: no floor at 99
    two = InflationSetup.build(
        [TraceNode("g", 8000, 100000, 2, "G2")], [TracePod(f"p{i}", 100, 100, 1, 1000) for i in range(3)]
    )
    assert reading_floor(two, 42).unallocated_reading == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(BoundError, match="rounds to 99"):
        reading_floor(two, 42, percent=99)


def test_cli_prints_the_floor_and_refuses_bad_checkpoints(tmp_path: Path) -> None:
    nodes, pods = _small_trace()
    node_csv, pod_csv = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    node_csv.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(f"{n.name},{n.cpu_milli},{n.memory_mib},{n.gpu_count},{n.gpu_model}\n" for n in nodes)
    )
    write_pods(pod_csv, pods)
    base = ["bound", "--nodes", str(node_csv), "--pods", str(pod_csv), "--seeds", "2", "--time-limit", "0"]
    runner = CliRunner()
    got = runner.invoke(app, [*base, "--no-full", "--fit-rule", "--json"])
    assert got.exit_code == 0, got.output
    payload = json.loads(got.stdout.strip().splitlines()[-1])
    floors = payload["fit_rule"]
    assert [f["seed"] for f in floors] == [42, 43]
    setup = InflationSetup.build(nodes, pods)
    direct = reading_floor(setup, 43, checkpoints=2)
    assert floors[1]["unallocated_floor_reading"] == round(direct.unallocated_reading, 3)
    # beside the floor, each policy's own reading of the same seed, never below it
    fabric = run_inflation(setup, "fabric", 43, stop_at_percent=101).unallocated_gpus_at(100)
    assert floors[1]["readings"]["fabric"] == round(fabric, 3)
    for f in floors:
        assert set(f["readings"]) == {"fgd", "fabric"}
        assert min(f["readings"].values()) >= f["unallocated_floor_reading"]
    mean = (floors[0]["unallocated_floor_reading"] + floors[1]["unallocated_floor_reading"]) / 2
    assert payload["fit_rule_mean_unallocated_floor_reading"] == pytest.approx(mean, abs=2e-3)
    table = runner.invoke(app, [*base, "--no-full", "--fit-rule", "--seeds", "1"])
    assert table.exit_code == 0, table.output
    assert "pod that fits" in table.stdout and "reading at 100%" in table.stdout
    bad = runner.invoke(app, [*base, "--fit-rule", "--checkpoints", "1"])
    assert bad.exit_code == 2
