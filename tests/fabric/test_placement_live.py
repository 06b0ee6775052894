"""`choose_node`: the live scheduler's call into the placement policies."""

from __future__ import annotations

from ceti.fabric.model import Demand
from ceti.fabric.placement import TargetWorkload, TaskClass
from ceti.fabric.placement.live import NodeFree, choose_node

CANDIDATES = [
    NodeFree("gpu-b", 32_000, 64_000, (1000, 1000), "T4"),
    NodeFree("gpu-a", 32_000, 64_000, (1000, 400), "T4"),
    NodeFree("v100", 64_000, 64_000, (1000,) * 4, "V100M32"),
]


def test_every_policy_returns_a_feasible_node_and_gpus() -> None:
    demand = Demand(cpu_milli=4_000, memory_mib=8_000, gpu_count=1, gpu_share_milli=300)
    workload = TargetWorkload((TaskClass(4_000, 300, 1),), (1.0,))
    for policy in [
        "random",
        "first-fit",
        "best-fit",
        "dot-product",
        "gpu-packing",
        "gpu-clustering",
        "fgd",
        "fabric",
    ]:
        node, gpus = choose_node(policy, CANDIDATES, demand, workload)
        free = {c.node_id: c for c in CANDIDATES}[node].gpu_free_milli
        assert len(gpus) == 1 and free[gpus[0]] >= 300


def test_best_fit_takes_the_tightest_gpu_and_gpu_models_filter() -> None:
    share = Demand(cpu_milli=1_000, memory_mib=1_000, gpu_count=1, gpu_share_milli=300)
    assert choose_node("best-fit", CANDIDATES, share) == ("gpu-a", (1,))
    whole = Demand(cpu_milli=1_000, memory_mib=1_000, gpu_count=2, gpu_models=frozenset({"V100M32"}))
    assert choose_node("fgd", CANDIDATES, whole) == ("v100", (0, 1))


def test_none_when_nothing_fits() -> None:
    big = Demand(cpu_milli=1_000, memory_mib=1_000, gpu_count=8)
    assert choose_node("fgd", CANDIDATES, big, None) is None
    cpu = Demand(cpu_milli=100_000, memory_mib=1)
    assert choose_node("best-fit", CANDIDATES, cpu) is None
    pinned = Demand(cpu_milli=1, memory_mib=1, node_ids=frozenset({"elsewhere"}))
    assert choose_node("random", CANDIDATES, pinned) is None
