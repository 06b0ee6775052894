"""Hand-worked cases for each baseline, from the rules of the FGD paper's simulator."""

from __future__ import annotations

import numpy as np
import pytest

from ceti.fabric.placement import ClusterState, PodRequest, TargetWorkload, TaskClass, make_policy
from ceti.fabric.placement.fgd import fgd_score
from ceti.fabric.placement.policies import normalize_scores
from ceti.fabric.placement.registry import policy_names

RNG = np.random.default_rng(0)


def cluster(*nodes: tuple[str, int, list[int], str], memory_mib: int = 256_000) -> ClusterState:
    """nodes: (name, free cpu milli, free milli per GPU, model); capacity = 128,000 milli-CPU."""
    return ClusterState.build(
        names=[n[0] for n in nodes],
        cpu_milli=[128_000] * len(nodes),
        memory_mib=[memory_mib] * len(nodes),
        gpu_models=[n[3] for n in nodes],
        gpu_free_milli=[n[2] for n in nodes],
        cpu_free=[n[1] for n in nodes],
    )


def place(policy: str, state: ClusterState, pod: PodRequest, workload: TargetWorkload | None = None):
    choice = make_policy(policy, workload).place(state, pod, RNG)
    assert choice is not None
    return state.names[choice[0]], choice[1]


def test_registry_has_every_policy() -> None:
    assert set(policy_names()) == {
        "random",
        "first-fit",
        "best-fit",
        "dot-product",
        "gpu-packing",
        "gpu-clustering",
        "fgd",
        "fabric",
    }
    with pytest.raises(ValueError, match="unknown placement policy"):
        make_policy("nope")


def test_dot_product_takes_the_smallest_product() -> None:
    # a: 64 cores, 2 free GPUs -> dot = 0.5*0.0625 + 0.25*0.125 = 0.0625
    # b: 32 cores, 1 free GPU  -> dot = 0.25*0.0625 + 0.125*0.125 = 0.03125 (smaller: wins)
    state = cluster(("a", 64_000, [1000, 1000], "T4"), ("b", 32_000, [1000, 0], "T4"))
    pod = PodRequest(8_000, 1_000, 1, 1000)
    scores = make_policy("dot-product").score(state, pod, np.arange(2))
    assert scores.tolist() == [96, 98]
    assert place("dot-product", state, pod) == ("b", (0,))


# One 500-milli share, CPU 1000. n1: one GPU with 600 free and all CPU free; n2: a whole GPU, 2000 CPU free.
# best-fit: leftover n1 = 127000/128000*.5 + 100/8000*.5 = 0.502, n2 = 1000/128000*.5 + 500/8000*.5 = 0.035
#   -> n2. FGD with target {1 whole GPU: 0.5, 500-share: 0.5}, both CPU 1000: n1 F 300 -> 100 (dF -200,
#   score 54); n2 F 0 -> 250 (dF +250, score 43) -> n1.
BF_VS_FGD = [("n1", 128_000, [600], "T4"), ("n2", 2_000, [1000], "T4")]
WORKLOAD = TargetWorkload((TaskClass(1000, 1000, 1), TaskClass(1000, 500, 1)), (0.5, 0.5))


def test_best_fit_and_fgd_choose_differently() -> None:
    pod = PodRequest(1_000, 1_000, 1, 500)
    assert place("best-fit", cluster(*BF_VS_FGD), pod) == ("n2", (0,))
    assert place("fgd", cluster(*BF_VS_FGD), pod, WORKLOAD) == ("n1", (0,))
    scores = make_policy("fgd", WORKLOAD).score(cluster(*BF_VS_FGD), pod, np.arange(2))
    assert scores.tolist() == [54, 43]


def test_fgd_score_is_an_integer_sigmoid_step() -> None:
    assert fgd_score(np.array([300.0]), np.array([100.0])).tolist() == [54]  # floor(54.98)
    assert fgd_score(np.array([0.0]), np.array([0.0])).tolist() == [50]
    assert fgd_score(np.array([0.0]), np.array([250.0])).tolist() == [43]


def test_fgd_ties_go_to_the_smallest_name() -> None:
    nodes = [
        ("node-b", 64_000, [1000, 1000], "T4"),
        ("node-a", 64_000, [1000, 1000], "T4"),
        ("node-c", 64_000, [1000, 1000], "T4"),
    ]
    pod = PodRequest(4_000, 1_000, 1, 1000)
    assert place("fgd", cluster(*nodes), pod, WORKLOAD) == ("node-a", (0,))


@pytest.mark.parametrize("policy", ["fgd", "fabric", "best-fit"])
def test_a_callers_preference_breaks_ties_before_the_name_even_between_alike_nodes(policy: str) -> None:
    """`prefer` (lower first) decides among equal scores: alike nodes, which FGD otherwise scores once (the
    first by name), stay apart when the caller prefers them differently."""
    nodes = [(name, 64_000, [1000, 1000], "T4") for name in ("node-a", "node-b", "node-c")]
    state = cluster(*nodes)
    pod = PodRequest(4_000, 1_000, 1, 1000)
    chosen = make_policy(policy, WORKLOAD).place(state, pod, RNG, prefer=np.array([2.0, 1.0, 3.0]))
    assert chosen is not None and state.names[chosen[0]] == "node-b"
    allowed = np.array([True, False, True])
    chosen = make_policy(policy, WORKLOAD).place(state, pod, RNG, allowed, np.array([2.0, 1.0, 3.0]))
    assert chosen is not None and state.names[chosen[0]] == "node-a"


def test_fgd_puts_a_share_on_the_best_scoring_gpu_not_the_tightest() -> None:
    # GPUs [400, 700], share 300, target {400-share}: tightest = GPU 0 (leaves 100, a fragment);
    # FGD: GPU 0 -> F 0 -> 100 (score 47), GPU 1 -> [400, 400], F stays 0 (score 50) -> GPU 1.
    state = cluster(("n", 64_000, [400, 700], "T4"))
    pod = PodRequest(1_000, 1_000, 1, 300)
    target = TargetWorkload((TaskClass(1000, 400, 1),), (1.0,))
    assert place("best-fit", state, pod) == ("n", (0,))
    assert place("fgd", state, pod, target) == ("n", (1,))


@pytest.mark.parametrize("policy", ["best-fit", "dot-product", "gpu-packing", "gpu-clustering"])
def test_non_fgd_policies_share_onto_the_tightest_gpu(policy: str) -> None:
    state = cluster(("n", 64_000, [1000, 300, 600, 300], "T4"))
    assert place(policy, state, PodRequest(1_000, 1_000, 1, 250)) == ("n", (1,))


def test_whole_gpus_are_the_lowest_index_free_ones() -> None:
    state = cluster(("n", 64_000, [500, 1000, 1000, 1000], "T4"))
    assert place("fgd", state, PodRequest(1_000, 1_000, 2, 1000), WORKLOAD) == ("n", (1, 2))
    assert place("best-fit", state, PodRequest(1_000, 1_000, 2, 1000)) == ("n", (1, 2))


def test_gpu_packing_scores_match_the_simulator_cases() -> None:
    policy = make_policy("gpu-packing")
    state = cluster(
        ("a", 1_000, [200, 1000, 1000, 500], "T4"),
        ("b", 1_000, [1000] * 4, "T4"),
        ("c", 1_000, [1000] * 8, "T4"),
    )
    pod = PodRequest(100, 0, 2, 1000)
    assert policy.score(state, pod, np.arange(3)).tolist() == [48, 29, 25]
    share = PodRequest(100, 0, 1, 200)
    # a: tightest fit is the 200-milli GPU -> 100 - 20/10 = 98; idle nodes keep their idle score
    assert policy.score(state, share, np.arange(3)).tolist() == [98, 29, 25]
    assert policy.score(state, PodRequest(100, 0), np.arange(3)).tolist() == [0, 0, 0]


def test_gpu_clustering_prefers_nodes_holding_only_the_same_kind() -> None:
    state = cluster(
        ("a", 64_000, [1000] * 8, "T4"), ("b", 64_000, [1000] * 8, "T4"), ("c", 64_000, [1000] * 8, "T4")
    )
    policy = make_policy("gpu-clustering")
    share, whole = PodRequest(1_000, 0, 1, 500), PodRequest(1_000, 0, 1, 1000)
    state.allocate(1, share, (0,))  # b holds a share
    state.allocate(2, whole, (0,))  # c holds a whole GPU
    state.allocate(2, share, (1,))  # ... and a share
    # share: a idle 25 + 0; b only-share 75 + 25*500//8000=1; c mixed 50 + 25*1500//8000=4
    assert policy.score(state, share, np.arange(3)).tolist() == [25, 76, 54]
    assert place("gpu-clustering", state, share) == ("b", (0,))


def test_best_fit_scores_are_min_max_normalised() -> None:
    assert normalize_scores(np.array([40, 50, 60])).tolist() == [0, 50, 100]
    assert normalize_scores(np.array([7, 7])).tolist() == [0, 0]


def test_first_fit_takes_the_first_node_and_gpu() -> None:
    state = cluster(("b", 64_000, [1000, 1000], "T4"), ("a", 64_000, [300, 1000], "T4"))
    assert place("first-fit", state, PodRequest(1_000, 1_000, 1, 200)) == ("a", (0,))


def test_random_picks_only_feasible_nodes_and_gpus() -> None:
    state = cluster(("a", 500, [1000], "T4"), ("b", 64_000, [100, 900, 800], "T4"), ("c", 64_000, [0], "T4"))
    policy = make_policy("random")
    rng = np.random.default_rng(1)
    seen = {policy.place(state, PodRequest(1_000, 1_000, 1, 700), rng) for _ in range(60)}
    assert seen == {(1, (1,)), (1, (2,))}


def test_gpu_spec_restricts_models_and_none_fits_gives_none() -> None:
    state = cluster(("a", 64_000, [1000], "T4"), ("b", 64_000, [1000], "V100M32"))
    mask = state.model_mask({"V100M32"})
    for policy in policy_names():
        assert place(policy, state, PodRequest(1_000, 1_000, 1, 1000, mask), WORKLOAD)[0] == "b"
        assert (
            make_policy(policy, WORKLOAD).place(state, PodRequest(1_000, 1_000, 2, 1000, mask), RNG) is None
        )


def test_memory_is_only_a_feasibility_check() -> None:
    state = cluster(("a", 64_000, [1000], "T4"), ("b", 64_000, [1000], "T4"), memory_mib=1_000)
    state.memory_free[0] = 10
    for policy in policy_names():
        assert place(policy, state, PodRequest(1_000, 500, 1, 1000), WORKLOAD)[0] == "b"


def test_fabric_prefers_a_used_node_when_fgd_ties() -> None:
    nodes = [("a", 64_000, [1000, 1000], "T4"), ("b", 64_000, [1000, 1000], "T4")]
    state = cluster(*nodes)
    state.cpu_free[1] = 63_000  # b holds a CPU task
    state.cpu_capacity[:] = 64_000
    pod = PodRequest(1_000, 1_000, 0, 0)
    target = TargetWorkload((TaskClass(1000, 1000, 1),), (1.0,))
    assert place("fgd", state, pod, target)[0] == "a"
    assert place("fabric", state, pod, target)[0] == "b"


def test_fabric_model_pressure_counts_only_type_constrained_gpu_demand() -> None:
    from ceti.fabric.placement.fabric import FabricPolicy
    from ceti.fabric.placement.workload import WorkloadArrays

    state = cluster(("a", 64_000, [1000] * 2, "T4"), ("b", 64_000, [1000] * 4, "V100M32"))
    target = TargetWorkload(
        (
            TaskClass(1000, 1000, 2, "V100M32"),
            TaskClass(1000, 500, 1, "T4|V100M32"),
            TaskClass(1000, 1000, 1),
        ),
        (0.5, 0.25, 0.25),
    )
    policy = FabricPolicy(target)
    pressure = policy.model_pressure(state, WorkloadArrays.build(target, state.models))
    t4, v100 = state.models.index("T4"), state.models.index("V100M32")
    # V100M32: 0.5 * 2000 (only it) + 0.25 * 500 / 2 models, over 4 GPUs; T4: 0.25 * 500 / 2 over 2 GPUs.
    # The T4|V100M32 class accepts every model of this cluster, so it constrains nothing: weight 0.
    assert pressure[v100] == pytest.approx(0.5 * 2000 / 4)
    assert pressure[t4] == pytest.approx(0.0)
