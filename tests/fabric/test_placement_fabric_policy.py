"""Hand-worked cases that pin the `fabric` placement policy's rules.

fabric = FGD's integer score of (fragmentation change + model-protection charge); ties broken by the
change in the placeable measure (CPU-aware copies of the target classes), then a node already in use,
then the smallest name. Every number below is worked out by hand in the comments.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ceti.fabric.placement import ClusterState, PodRequest, TargetWorkload, TaskClass, make_policy
from ceti.fabric.placement.fabric import FabricPolicy, PlaceableCache, whole_gpu_cpu_per_gpu
from ceti.fabric.placement.workload import ArrivalMemory, ArrivalMultiGpu, SharePlan, WorkloadArrays

RNG = np.random.default_rng(0)


def cluster(*nodes: tuple[str, int, list[int], str], cpu_capacity: int = 128_000) -> ClusterState:
    """nodes: (name, free cpu milli, free milli per GPU, model)."""
    return ClusterState.build(
        names=[n[0] for n in nodes],
        cpu_milli=[cpu_capacity] * len(nodes),
        memory_mib=[256_000] * len(nodes),
        gpu_models=[n[3] for n in nodes],
        gpu_free_milli=[n[2] for n in nodes],
        cpu_free=[n[1] for n in nodes],
    )


def place(policy: str, state: ClusterState, pod: PodRequest, target: TargetWorkload):
    choice = make_policy(policy, target).place(state, pod, RNG)
    return None if choice is None else (state.names[choice[0]], choice[1])


def t4_mask(state: ClusterState) -> np.ndarray:
    return state.model_mask({"T4"})


T4_AND_ANY = TargetWorkload((TaskClass(1000, 1000, 1, "T4"), TaskClass(1000, 1000, 1)), (0.5, 0.5))


def test_reserved_share_and_load_factor_by_hand() -> None:
    state = cluster(("a", 64_000, [1000, 1000], "T4"), ("b", 64_000, [1000] * 6, "G2"))
    policy = FabricPolicy(T4_AND_ANY)
    wl = WorkloadArrays.build(T4_AND_ANY, state.models)
    t4, g2 = state.models.index("T4"), state.models.index("G2")
    # demand per task: 0.5 * 1000 (T4 only) + 0.5 * 1000 (any); only the T4 half is constrained
    share = policy.reserved_share(state, wl)
    assert share[t4] == pytest.approx(0.5) and share[g2] == pytest.approx(0.0)
    # filling the 8 free GPUs would bring 0.5 * 8000 of T4-only work into T4's 2000 free milli
    load = policy.load_factor(state, wl)
    assert load[t4] == pytest.approx(2.0) and load[g2] == pytest.approx(0.0)
    # the charge is capped at the pod's own GPU milli
    charge = policy.protection_charge(state, wl, PodRequest(1000, 1000, 1, 1000), np.asarray([t4, g2]))
    assert charge.tolist() == pytest.approx([1000.0, 0.0])
    assert policy.protection_charge(state, wl, PodRequest(1000, 1000), np.asarray([t4])).tolist() == [0.0]


def test_multi_model_class_is_split_by_gpus_and_a_class_accepting_every_model_constrains_nothing() -> None:
    state = cluster(
        ("a", 64_000, [1000] * 2, "T4"), ("b", 64_000, [1000] * 6, "V100M32"), ("c", 64_000, [1000] * 8, "G2")
    )
    target = TargetWorkload(
        (TaskClass(1000, 1000, 1, "T4|V100M32"), TaskClass(1000, 1000, 1, "T4|V100M32|G2")), (0.5, 0.5)
    )
    share = FabricPolicy(target).reserved_share(state, WorkloadArrays.build(target, state.models))
    t4, v100, g2 = (state.models.index(m) for m in ("T4", "V100M32", "G2"))
    # the first class (half the demand) may not use G2: split 2:6 over T4 and V100M32 by GPUs
    assert share[t4] == pytest.approx(0.5 * 2 / 8)
    assert share[v100] == pytest.approx(0.5 * 6 / 8)
    assert share[g2] == pytest.approx(0.0)


def test_unconstrained_pod_leaves_the_constrained_model_alone_where_fgd_ties() -> None:
    # a: T4, 2 free GPUs, 64 cores. b: G2, 2 free GPUs, 1.5 cores. Pod: any model, 1 GPU, 1 core.
    # FGD: on a both classes fit before and after: dF = 0, score 50.
    #      on b the T4 class counts all idle GPUs (2000 -> 1000, x0.5 = -500), and the any class stops
    #      fitting (0.5 CPU left < 1 core): 0 -> 0.5 * 1000 (+500): dF = 0, score 50. Tie: smallest name, a.
    # fabric: a T4 GPU carries a charge of 1000 x min(1, 0.5 * 4000 / 2000) = 1000: a scores
    #      int(100 * sigmoid(-1)) = 26, b 50: b.
    state = cluster(("a", 64_000, [1000, 1000], "T4"), ("b", 1_500, [1000, 1000], "G2"))
    pod = PodRequest(1000, 1000, 1, 1000)
    assert place("fgd", state, pod, T4_AND_ANY)[0] == "a"
    assert place("fabric", state, pod, T4_AND_ANY)[0] == "b"


def test_constrained_pod_uses_its_model_and_is_refused_when_the_model_is_full() -> None:
    state = cluster(("a", 64_000, [1000, 1000], "G2"), ("b", 64_000, [1000], "T4"))
    assert place("fabric", state, PodRequest(1000, 1000, 1, 1000, t4_mask(state)), T4_AND_ANY) == ("b", (0,))
    state.gpu_free[state.names.index("b")] = 0  # T4 full, G2 idle
    assert place("fabric", state, PodRequest(1000, 1000, 1, 1000, t4_mask(state)), T4_AND_ANY) is None


def test_cpu_only_pod_goes_where_it_blocks_no_gpu_copy() -> None:
    # Target: 4-core, 1-GPU tasks. A 4-core CPU-only pod: FGD's measure sees no change on either node
    # (the class still fits once on a), both score 50, FGD takes a. The placeable measure: a (8 cores,
    # 2 GPUs) goes from 2 copies to 1, +1000 milli fragmented; b (64 cores) stays at 2 copies: fabric b.
    target = TargetWorkload((TaskClass(4000, 1000, 1),), (1.0,))
    state = cluster(("a", 8_000, [1000, 1000], "G2"), ("b", 64_000, [1000, 1000], "G2"))
    pod = PodRequest(4000, 1000)
    assert place("fgd", state, pod, target)[0] == "a"
    assert place("fabric", state, pod, target)[0] == "b"


def test_placeable_measure_by_hand() -> None:
    # One node, GPUs free [1000, 700, 300], 5 cores. Classes: (2 cores, 500 milli) p=0.5 and
    # (1 core, 1000 x 2 GPUs) p=0.5. Share class: GPU copies 2 + 1 + 0 = 3, CPU copies 2 -> 2 copies,
    # 1000 usable of 2000: 1000 fragmented. Two-GPU class: one whole GPU -> 0 copies: 2000 fragmented.
    target = TargetWorkload((TaskClass(2000, 500, 1), TaskClass(1000, 1000, 2)), (0.5, 0.5))
    state = cluster(("a", 5_000, [1000, 700, 300], "G2"))
    cache = PlaceableCache(state, WorkloadArrays.build(target, state.models))
    assert cache.frag[0] == pytest.approx(0.5 * 1000 + 0.5 * 2000)
    # a 300-milli share on the 700 GPU: share copies 2 + 0 + 0 = 2, CPU 1 core left -> 0 copies,
    # all 1700 fragmented; the two-GPU class still 0 copies: 1700
    _, gpus, after = cache.options(state, PodRequest(4000, 1000, 1, 300), np.asarray([0]))
    option = {int(g): float(x) for g, x in zip(gpus, after, strict=True)}
    assert option[1] == pytest.approx(0.5 * 1700 + 0.5 * 1700)


def test_ties_go_to_a_used_node_then_the_smallest_name() -> None:
    target = TargetWorkload((TaskClass(1000, 1000, 1),), (1.0,))
    idle = cluster(("a", 64_000, [1000, 1000], "T4"), ("b", 64_000, [1000, 1000], "T4"), cpu_capacity=64_000)
    pod = PodRequest(1000, 1000)
    assert place("fabric", idle, pod, target)[0] == "a"
    used = cluster(("a", 64_000, [1000, 1000], "T4"), ("b", 63_000, [1000, 1000], "T4"), cpu_capacity=64_000)
    assert place("fabric", used, pod, target)[0] == "b"


def test_share_goes_to_the_lowest_index_gpu_among_equal_ones() -> None:
    target = TargetWorkload((TaskClass(1000, 500, 1),), (1.0,))
    state = cluster(("a", 64_000, [1000, 1000, 1000], "T4"))
    assert place("fabric", state, PodRequest(1000, 1000, 1, 500), target) == ("a", (0,))


@pytest.mark.parametrize("seed", range(5))
def test_never_places_where_a_constraint_forbids(seed: int) -> None:
    rng = np.random.default_rng(seed)
    models = ["T4", "G2", "V100M32", ""]
    nodes = []
    for i in range(12):
        model = models[int(rng.integers(len(models)))]
        gpus = [1000] * (int(rng.integers(1, 5)) if model else 0)
        nodes.append((f"n{i:02d}", int(rng.integers(4, 33)) * 1000, gpus, model))
    state = cluster(*nodes, cpu_capacity=32_000)
    state.memory_free[:] = state.memory_capacity = np.full(state.size, 64_000)
    specs = ["", "T4", "G2|V100M32", "V100M32"]
    classes = []
    for _ in range(6):
        count = int(rng.integers(0, 3))
        milli = 0 if count == 0 else int(rng.choice([250, 500, 1000])) if count == 1 else 1000
        classes.append(
            TaskClass(
                int(rng.integers(1, 9)) * 1000, milli, count, specs[int(rng.integers(4))] if count else ""
            )
        )
    target = TargetWorkload.from_counts(Counter(classes))
    policy = make_policy("fabric", target)
    for _ in range(150):
        c = classes[int(rng.integers(len(classes)))]
        mask = state.model_mask(c.gpu_models) if (c.gpu_count and c.gpu_models) else None
        pod = PodRequest(c.cpu_milli, int(rng.integers(1, 20)) * 1000, c.gpu_count, c.gpu_milli, mask)
        feasible = state.feasible(pod)
        choice = policy.place(state, pod, RNG)
        if choice is None:
            assert not feasible.any()
            continue
        node, gpus = choice
        assert feasible[node]
        if mask is not None:
            assert mask[state.model_idx[node]], "placed on a GPU model the pod does not accept"
        assert state.cpu_free[node] >= pod.cpu_milli and state.memory_free[node] >= pod.memory_mib
        assert len(set(gpus)) == pod.gpu_count
        state.allocate(node, pod, gpus)  # raises if a GPU lacks the milli
        assert (state.cpu_free >= 0).all() and (state.memory_free >= 0).all() and (state.gpu_free >= 0).all()


# A trace-like mix: half whole GPUs, shares of 470, 650 and 320 milli, and CPU-only tasks.
SHARE_MIX = TargetWorkload(
    (
        TaskClass(1000, 1000, 1),
        TaskClass(1000, 470, 1),
        TaskClass(1000, 650, 1),
        TaskClass(1000, 320, 1),
        TaskClass(1000, 0, 0),
    ),
    (0.5, 0.2, 0.1, 0.1, 0.1),
)


def test_share_plan_by_hand() -> None:
    # 650 and 320 in equal numbers: 650 + 320 = 970 per GPU beats every other pattern (320 x 3 = 960, a lone
    # 650, ...), and 1000 GPUs hold 1000 pairs of the 1031 of each that fill them, so only that pattern is used
    pair = SharePlan.from_workload(
        TargetWorkload((TaskClass(1000, 650, 1), TaskClass(1000, 320, 1)), (0.5, 0.5))
    )
    assert pair.patterns == (((320, 1), (650, 1)),)
    assert pair.follows == {(0, 320), (0, 650), (320, 650), (650, 320)}
    assert pair.follows_plan(650, 320) and not pair.follows_plan(320, 320)
    # SHARE_MIX: 0.691 GPUs per task, 1447 tasks fill 1000 GPUs: 724 whole, 145 pairs 650 + 320 and 145 pairs
    # 470 + 470 need 1013 GPUs; per GPU whole = 1000 > 650 + 320 = 970 > 470 + 470 = 940, so the LP gives up 13
    # GPUs of 470 pairs and plans both pairings; 470 + 320 (790) is not planned
    mix = SharePlan.from_workload(SHARE_MIX)
    assert set(mix.patterns) == {((320, 1), (650, 1)), ((470, 2),)}
    assert not mix.follows_plan(470, 320) and mix.follows_plan(0, 320) and mix.follows_plan(470, 470)
    assert SharePlan.from_workload(T4_AND_ANY).follows == frozenset()  # no shares: no plan


def test_share_follows_the_plan_where_fgd_pairs_it_off_plan() -> None:
    # one node, GPU 0 holds a 470 (530 free), GPU 1 is empty; a 320 share arrives.
    # FGD's measure before: whole 0.5 x 530 + 650-share 0.1 x 530 + CPU-only 0.1 x 1530 = 471.
    # On GPU 0 (210 left): 0.5 x 210 + 0.2 x 210 + 0.1 x 210 + 0.1 x 210 + 0.1 x 1210 = 310, dF = -161, score 54;
    # on GPU 1 (680 left): 0.5 x 1210 + 0.1 x 530 + 0.1 x 1210 = 779, dF = +308, score 42. FGD pairs 470 + 320
    # and strands 210 milli that only rare small shares fill; the plan pairs 320 with 650, so fabric opens GPU 1
    # and keeps GPU 0 for another 470.
    def state() -> ClusterState:
        return cluster(("a", 120_000, [530, 1000], "G2"))

    share = PodRequest(1000, 1000, 1, 320)
    assert place("fgd", state(), share, SHARE_MIX) == ("a", (0,))
    assert place("fabric", state(), share, SHARE_MIX) == ("a", (1,))
    # a 470 follows the plan on GPU 0 (470 + 470): both agree
    assert place("fabric", state(), PodRequest(1000, 1000, 1, 470), SHARE_MIX) == ("a", (0,))
    # a size the plan does not know has no option on plan: FGD's score decides, as before
    odd = PodRequest(1000, 1000, 1, 300)
    assert place("fabric", state(), odd, SHARE_MIX) == place("fgd", state(), odd, SHARE_MIX)
    # with the arrival-only rules off (the trace replay, where work leaves) the plan is not used
    policy = FabricPolicy(SHARE_MIX)
    policy.placeable_tiebreak = False
    assert policy.place(state(), share, RNG) == (0, (0,))


def test_a_planned_pairing_needs_cpu_for_the_partner() -> None:
    # every class asks 8 cores: whole GPUs 0.6, 470-milli shares 0.3, CPU-only 0.1; the plan is 470 + 470.
    # Node a: 2 idle GPUs but 6 cores free, so FGD already counts both GPUs as fragmented for the GPU classes:
    # 0.9 x 2000 + CPU-only 0.1 x 2000 = 2000. A 470 share asking 4 cores there leaves 1530 milli, all of it
    # fragmented (2 cores left): 1530, dF = -470, score 61. On node b (8 idle GPUs, 96 cores): before 0.1 x
    # 8000 = 800; after 0.6 x 530 (the whole class cannot use GPU 0) + 0.1 x 7530 = 1071, dF = +271, score 43.
    # FGD uses the stranded node a, and the 530 left beside the share can never take its planned partner (a
    # 470 asks 8 cores). fabric counts a planned pairing only where the node keeps the partner's CPU: a is off
    # the plan, b is on it. (b has 128 cores: with 96, the cluster's 102 cores for 10,000 free GPU milli, 10.2
    # a milli, are short of the 8,000 / 741 = 10.8 the mix asks, and the partner's room gives way: see
    # `test_the_partner_room_gives_way_where_the_cluster_runs_short_of_cpu`; fabric then takes a, as FGD.)
    mix = TargetWorkload(
        (TaskClass(8000, 1000, 1), TaskClass(8000, 470, 1), TaskClass(8000, 0, 0)), (0.6, 0.3, 0.1)
    )
    plan = SharePlan.from_workload(mix)
    assert plan.patterns == (((470, 2),),)
    # a GPU holding one 470 waits for the second (8 cores); one holding two is complete
    assert plan.open_partner == {470: 470}
    assert list(plan.reserved(plan.share_cpu)[[0, 470, 940]]) == [0, 8000, 0]

    def state(cpu_b: int = 128_000) -> ClusterState:
        return cluster(("a", 6000, [1000, 1000], "G2"), ("b", cpu_b, [1000] * 8, "G2"), cpu_capacity=cpu_b)

    share = PodRequest(4000, 1000, 1, 470)
    assert place("fgd", state(), share, mix) == ("a", (0,))
    assert place("fabric", state(), share, mix) == ("b", (0,))
    without = FabricPolicy(mix)
    without.partner_room = False
    assert without.place(state(), share, RNG) == (0, (0,))
    assert place("fabric", state(96_000), share, mix) == ("a", (0,))  # short of CPU


# whole GPUs 0.6, 470-milli shares 0.3, CPU-only 0.1; whole and CPU-only tasks ask 8 cores, a 470 asks 4
WAIT_MIX = TargetWorkload(
    (TaskClass(8000, 1000, 1), TaskClass(4000, 470, 1), TaskClass(8000, 0, 0)), (0.6, 0.3, 0.1)
)


def test_open_partner_and_reserved_tables_by_hand() -> None:
    # 650 + 320: a GPU at 650 or 320 used waits for the other size; at 970 it is complete
    pair = SharePlan.from_workload(
        TargetWorkload((TaskClass(6000, 650, 1), TaskClass(2000, 320, 1)), (0.5, 0.5))
    )
    assert pair.open_partner == {320: 650, 650: 320}
    cpu = pair.reserved(pair.share_cpu)
    assert cpu[650] == 2000 and cpu[320] == 6000 and cpu[970] == 0 and cpu[0] == 0 and cpu[1000] == 0
    # WAIT_MIX plans 470 + 470 (0.741 GPUs per task, 1349 tasks: 810 whole GPUs and 202 pairs need 1012 > 1000
    # GPUs, whole GPUs first): a GPU with one 470 waits for a second one, which asks 4 cores
    plan = SharePlan.from_workload(WAIT_MIX)
    assert plan.patterns == (((470, 2),),) and plan.open_partner == {470: 470}
    assert plan.reserved(plan.share_cpu)[470] == 4000 and plan.reserved({470: 30_000})[470] == 30_000


def test_arrival_memory_is_the_median_of_a_class_and_is_reread_when_arrivals_double() -> None:
    memory = ArrivalMemory()
    due = [memory.observe(4000, 470, 1, m) for m in (10_000, 30_000, 20_000, 50_000, 5_000)]
    assert due == [True, True, False, True, False]  # arrivals 1, 2 and 4
    assert memory.median(4000, 470, 1) == 20_000  # of 5,000 10,000 20,000 30,000 50,000
    assert memory.median(8000, 1000, 1) == 0  # not seen: asks none
    assert memory.of_classes(WAIT_MIX).tolist() == [0, 20_000, 0]


def test_a_pod_keeps_the_cpu_that_a_waiting_partner_needs() -> None:
    # Node a: two GPUs each hold a 470 (530 free) and wait for a second 470 (4 cores each: 8 cores reserved),
    # one idle GPU, 11 cores free. Node b: 8 idle GPUs, 96 cores. A whole-GPU task asking 4 cores arrives.
    # FGD: on a, before: whole class fits (one GPU, 11 cores): 0.6 x 1060; 470 class fits: 0; CPU-only 0.1 x
    # 2060: 842. After (7 cores, GPUs 530 530 0): whole cannot fit: 0.6 x 1060; the 470 class still fits once
    # (7 >= 4 cores): 0; CPU-only 0.1 x 1060: 742, dF = -100, score 52. On b: 800 -> 700, dF = -100, score 52:
    # a tie, FGD takes a. Placeable: a 1178 -> 919 (whole 1 copy -> 0, 470 copies by CPU 2 -> 1), b 1508 -> 1249:
    # -259 both, a tie; a is in use, so fabric without reservations takes a too, and leaves 7 cores where the
    # two waiting GPUs need 8: one of them never gets its partner. fabric keeps the reservation: b.
    # With 16 cores on a, 12 stay (>= 8): the reservation holds there, and fabric takes a as before.
    def state(cpu_a: int) -> ClusterState:
        return cluster(
            ("a", cpu_a, [530, 530, 1000], "G2"), ("b", 96_000, [1000] * 8, "G2"), cpu_capacity=96_000
        )

    task = PodRequest(4000, 1000, 1, 1000)
    assert place("fgd", state(16_000), task, WAIT_MIX)[0] == "a"
    assert place("fabric", state(16_000), task, WAIT_MIX)[0] == "a"  # 12 cores left >= 8 reserved
    assert place("fgd", state(11_000), task, WAIT_MIX)[0] == "a"
    assert place("fabric", state(11_000), task, WAIT_MIX)[0] == "b"  # 7 cores left < 8 reserved
    without = FabricPolicy(WAIT_MIX)
    without.partner_room = False
    assert without.place(state(11_000), task, RNG)[0] == 0  # without the reservation: a, as FGD


def test_the_partner_room_gives_way_where_the_cluster_runs_short_of_cpu() -> None:
    # The case above with 11 cores on a, but b has 80 cores instead of 96: the cluster has 91 cores for 10,060
    # free GPU milli, 9.05 a milli, and WAIT_MIX asks 6,800 / 741 = 9.18 a milli (0.6 x 8 cores + 0.3 x 4 +
    # 0.1 x 8 over 0.6 x 1000 + 0.3 x 470). CPU runs out before the GPUs do, so the cores a keeps for its
    # partners are cores the arrivals will lack: fabric places as without the reservation, on a (b's 80 cores
    # change none of the scores above). With 96 cores on b (107 cores, 10.6 a milli) it keeps them: b.
    def state(cpu_b: int) -> ClusterState:
        return cluster(
            ("a", 11_000, [530, 530, 1000], "G2"), ("b", cpu_b, [1000] * 8, "G2"), cpu_capacity=96_000
        )

    task = PodRequest(4000, 1000, 1, 1000)
    assert place("fabric", state(96_000), task, WAIT_MIX)[0] == "b"
    assert place("fabric", state(80_000), task, WAIT_MIX)[0] == "a"
    assert place("fgd", state(80_000), task, WAIT_MIX)[0] == "a"


def test_a_cpu_only_pod_leaves_idle_gpus_their_cpu_where_the_cluster_runs_short_of_cpu() -> None:
    # Node a: 2 idle GPUs, 19 cores. Node b: both GPUs hold a 470 (530 free), 6 cores. The cluster has 25 cores
    # for 3,060 free GPU milli, 8.2 a milli, and WAIT_MIX asks 9.18: CPU is short, the partner room is off.
    # A CPU-only pod asking 4 cores arrives. FGD: on a (15 cores left) every class still fits, dF = 0, score
    # 50. On b (2 cores left) the 470 class no longer fits: 0.3 x 1060 more fragmented, dF = +318, score 42.
    # FGD and fabric without the rule take a, and leave 15 cores for two idle GPUs whose whole-GPU tasks ask
    # 8 each: one is stranded. fabric keeps each idle GPU of the node the 8 cores whole-GPU work asks per GPU:
    # only b keeps that (no idle GPU), so b. With 20 cores on a (still short: 26 < 28.1), 16 stay: a.
    def state(cpu_a: int) -> ClusterState:
        return cluster(("a", cpu_a, [1000, 1000], "G2"), ("b", 6_000, [530, 530], "G2"))

    pod = PodRequest(4000, 1000)
    policy = FabricPolicy(WAIT_MIX)
    assert policy._cpu_short(state(19_000)) and policy._cpu_short(state(20_000))
    assert place("fgd", state(19_000), pod, WAIT_MIX)[0] == "a"
    assert place("fabric", state(19_000), pod, WAIT_MIX)[0] == "b"
    assert place("fabric", state(20_000), pod, WAIT_MIX)[0] == "a"
    without = FabricPolicy(WAIT_MIX)
    without.cpu_pod_room = False
    assert without.place(state(19_000), pod, RNG)[0] == 0


def test_while_the_cluster_has_cpu_to_spare_a_cpu_only_pod_places_as_without_the_rule() -> None:
    # Nodes of 64 cores and up to 4 GPUs: WAIT_MIX asks 9.18 cores a milli, at most 36.7 cores a node, so the
    # cluster is never short of CPU and the CPU-only room must change no decision over a stream of arrivals.
    rng = np.random.default_rng(5)
    nodes = [(f"n{i}", 64_000, [1000] * int(rng.integers(1, 5)), "G2") for i in range(12)]
    with_rule, without = FabricPolicy(WAIT_MIX), FabricPolicy(WAIT_MIX)
    without.cpu_pod_room = False
    a, b = cluster(*nodes), cluster(*nodes)
    kinds = [PodRequest(8000, 1000), PodRequest(8000, 1000, 1, 1000), PodRequest(4000, 1000, 1, 470)]
    placed_cpu_only = 0
    for _ in range(60):
        pod = kinds[int(rng.integers(len(kinds)))]
        assert not with_rule._cpu_short(a)
        one, two = with_rule.place(a, pod, RNG), without.place(b, pod, RNG)
        assert one == two
        if one is None:
            continue
        a.allocate(one[0], pod, one[1])
        b.allocate(two[0], pod, two[1])
        placed_cpu_only += pod.gpu_count == 0
    assert placed_cpu_only >= 10


def test_a_share_on_plan_leaves_each_idle_gpu_of_its_node_a_whole_task() -> None:
    # Node a: GPU 0 holds a 470 (530 free), 3 idle GPUs, 26 cores free. Node b: 8 idle GPUs, 96 cores. A 470
    # asking 4 cores arrives; every option follows the plan (470 + 470 on a's GPU 0, a new pair elsewhere).
    # FGD: a, GPU 0: before 0.6 x 530 + 0.1 x 3530 = 671; after (60 free, 22 cores) 0.6 x 60 + 0.3 x 60 + 0.1 x
    # 3060 = 360, dF = -311, score 57. a, GPU 1: after 0.6 x 1060 + 0.1 x 3060 = 942, dF = +271, score 43.
    # b: 800 -> 0.6 x 530 + 0.1 x 7530 = 1071, dF = +271, score 43. FGD (and fabric without reservations)
    # complete the pair on a, leaving 22 cores for 3 idle GPUs whose whole-GPU tasks ask 8 each: one is
    # stranded. fabric: on a's GPU 0 the node keeps 3 x 8 = 24 > 22 cores; on GPU 1, 4 + 4 for the two
    # waiting GPUs + 2 x 8 = 24 > 22; on b, 4 + 7 x 8 = 60 <= 92: b's GPU 0 is the only option on plan.
    # With 28 cores on a, 24 stay for the 3 idle GPUs and fabric completes the pair there.
    def state(cpu_a: int) -> ClusterState:
        return cluster(("a", cpu_a, [530, 1000, 1000, 1000], "G2"), ("b", 96_000, [1000] * 8, "G2"))

    share = PodRequest(4000, 1000, 1, 470)
    assert place("fgd", state(26_000), share, WAIT_MIX) == ("a", (0,))
    assert place("fabric", state(26_000), share, WAIT_MIX) == ("b", (0,))
    assert place("fabric", state(28_000), share, WAIT_MIX) == ("a", (0,))
    without = FabricPolicy(WAIT_MIX)
    without.partner_room = False
    assert without.place(state(26_000), share, RNG) == (0, (0,))


def test_memory_learnt_from_arrivals_keeps_a_waiting_partners_memory() -> None:
    # Node a: GPU 0 holds a 470 and waits for another; 64 cores, 40,000 MiB free. Node b: idle, 96 cores,
    # 256,000 MiB. A CPU-only task asking 4 cores and 20,000 MiB: FGD's and the placeable measure's CPU terms do
    # not change on either node (a keeps 60 cores), so fabric takes a, the node in use, while it knows nothing
    # of memory. Once three 470s of 30,000 MiB have arrived (the fourth arrival re-reads the estimates), a
    # waiting GPU keeps 30,000 MiB for its partner: a would keep 20,000, so the task goes to b.
    def state() -> ClusterState:
        s = cluster(("a", 64_000, [530, 1000], "G2"), ("b", 96_000, [1000] * 8, "G2"), cpu_capacity=96_000)
        s.memory_free[s.names.index("a")] = 40_000
        return s

    task = PodRequest(4000, 20_000)
    assert place("fabric", state(), task, WAIT_MIX)[0] == "a"
    policy = FabricPolicy(WAIT_MIX)
    for _ in range(3):  # arrivals seen (and placed elsewhere)
        policy.place(state(), PodRequest(4000, 30_000, 1, 470), RNG)
    assert policy.place(state(), task, RNG)[0] == 1
    assert policy.reservations(policy.share_plan()).memory[470] == 30_000


def test_nodes_that_differ_only_in_free_memory_are_different_options() -> None:
    # Nodes a and b: the same model, free CPU and GPUs (GPU 0 holds a 470 that waits for another), both in use;
    # a has 40,000 MiB free, b 100,000. FGD scores one node per such state, the first by name: a. Once 470s of
    # 30,000 MiB have arrived, a CPU-only task of 20,000 MiB would leave a 20,000 < 30,000 for the waiting
    # partner, b 80,000: fabric tells the two apart and takes b.
    def state() -> ClusterState:
        s = cluster(("a", 64_000, [530, 1000], "G2"), ("b", 64_000, [530, 1000], "G2"), cpu_capacity=96_000)
        s.memory_free[:] = [40_000, 100_000]
        return s

    fgd_cache = make_policy("fgd", WAIT_MIX).cache(state(), PodRequest(4000, 20_000))  # type: ignore[attr-defined]
    assert fgd_cache.distinct(np.asarray([0, 1])).tolist() == [0]
    policy = FabricPolicy(WAIT_MIX)
    for _ in range(3):
        policy.place(state(), PodRequest(4000, 30_000, 1, 470), RNG)
    assert policy.place(state(), PodRequest(4000, 20_000), RNG)[0] == 1


MULTI_MIX = TargetWorkload(
    (TaskClass(8000, 1000, 1), TaskClass(4000, 1000, 4), TaskClass(4000, 470, 1), TaskClass(8000, 0, 0)),
    (0.3, 0.3, 0.3, 0.1),
)


def test_the_room_of_an_idle_gpu_is_what_whole_gpu_work_asks_per_gpu() -> None:
    # WAIT_MIX: one whole-GPU class, 8 cores for 1 GPU. MULTI_MIX: (0.3 x 8000 + 0.3 x 4000) / (0.3 x 1 +
    # 0.3 x 4) = 3600 / 1.5 = 2400 milli per GPU: four-GPU tasks ask 1 core per GPU. No whole-GPU class: 0.
    assert whole_gpu_cpu_per_gpu(WAIT_MIX) == 8000
    assert whole_gpu_cpu_per_gpu(MULTI_MIX) == 2400
    assert whole_gpu_cpu_per_gpu(TargetWorkload((TaskClass(4000, 470, 1),), (1.0,))) == 0
    # The case of the test above under MULTI_MIX: a's 3 idle GPUs keep 3 x 2.4 = 7.2 of the 22 cores left,
    # so completing the pair on a keeps every reservation, and fabric does (with 8 cores per idle GPU, the
    # least a one-GPU class asks, it went to b).
    state = cluster(("a", 26_000, [530, 1000, 1000, 1000], "G2"), ("b", 96_000, [1000] * 8, "G2"))
    policy = FabricPolicy(MULTI_MIX)
    assert policy.reservations(policy.share_plan()).idle_cpu == 2400
    assert policy.place(state, PodRequest(4000, 1000, 1, 470), RNG) == (0, (0,))


def test_arrival_multi_gpu_learns_the_share_of_demand_and_the_median_ask() -> None:
    multi = ArrivalMultiGpu()
    assert multi.asks() == {}
    multi.observe(64_000, 100_000, 1000, 8)
    multi.observe(4000, 8000, 470, 1)  # a share: demand, no multi-GPU ask
    multi.observe(88_000, 300_000, 1000, 8)
    multi.observe(120_000, 200_000, 1000, 8)
    multi.observe(32_000, 60_000, 1000, 4)
    multi.observe(8000, 16_000, 0, 0)  # CPU-only: no GPU demand
    # GPU demand 8,000 + 470 + 8,000 + 8,000 + 4,000 = 28,470 milli
    asks = multi.asks()
    assert sorted(asks) == [4, 8]
    assert asks[8].demand_share == pytest.approx(24_000 / 28_470)
    assert (asks[8].cpu_milli, asks[8].memory_mib) == (88_000, 200_000)  # medians of three
    assert asks[4] == pytest.approx((4000 / 28_470, 32_000, 60_000))
    multi.observe(4000, 8000, 1000, 1)
    assert multi.asks()[8].demand_share == pytest.approx(24_000 / 29_470)  # every arrival moves the shares


@pytest.mark.parametrize(("cpu_b", "fabric_takes"), [(96_000, "c"), (32_000, "b")])
def test_a_task_leaves_the_last_node_an_expected_multi_gpu_task_needs(cpu_b: int, fabric_takes: str) -> None:
    # Nodes a and b: 8 idle GPUs each; c: 2 idle GPUs; 96 cores and 256,000 MiB each (b: `cpu_b` cores). An
    # 8-GPU task asking 64 cores and 100,000 MiB arrives and goes to a. Then a one-GPU task: the arrived GPU
    # demand is 8,000 + 1,000 milli, 8,000 of it 8-GPU work (0.889); the free GPU milli is 8,000 (b) + 2,000
    # (c), so 0.889 x 10,000 / 8,000 = 1.11 eight-GPU tasks are expected among the arrivals to come. Copies of
    # the median 8-GPU task (64 cores, 100,000 MiB) the nodes can take: b 1, c 0. The one-GPU task on b would
    # leave 7 idle GPUs, 0 copies, under 1.11: fabric takes c, where FGD's measure (and fabric without the
    # room) takes b. With 32 cores, b cannot take the 8-GPU task anyway: no copy to keep, and fabric takes b.
    def run(room: bool) -> tuple[str, str]:
        state = ClusterState.build(
            names=["a", "b", "c"],
            cpu_milli=[96_000] * 3,
            memory_mib=[256_000] * 3,
            gpu_models=["G2"] * 3,
            gpu_free_milli=[[1000] * 8, [1000] * 8, [1000, 1000]],
            cpu_free=[96_000, cpu_b, 96_000],
        )
        policy = FabricPolicy(TargetWorkload((TaskClass(4000, 1000, 1),), (1.0,)))
        policy.multi_gpu_room = room
        big = PodRequest(64_000, 100_000, 8, 1000)
        node, gpus = policy.place(state, big, RNG)
        state.allocate(node, big, gpus)
        one = policy.place(state, PodRequest(4000, 8000, 1, 1000), RNG)
        return state.names[node], state.names[one[0]]

    assert run(room=True) == ("a", fabric_takes)
    assert run(room=False) == ("a", "b")
