"""Unit tests of the scheduling core's rules, one rule per test."""

from __future__ import annotations

import pytest

from ceti.fabric import GPU, Allocation, Decisions, Demand, Job, Node, Snapshot, schedule

# every rule here holds for both placements unless marked flow_only (conftest.each_placement)
pytestmark = pytest.mark.usefixtures("each_placement")


def node(nid: str, gpus: int = 4, model: str = "A100", *, cpu: int = 64, mem_gib: int = 256, **kw) -> Node:
    vram = kw.pop("vram_mib", 40960)
    return Node(nid, cpu * 1000, mem_gib * 1024, tuple(GPU(i, model, vram) for i in range(gpus)), **kw)


def job(jid: str, order: int, gpus: int = 1, *, cpu: int = 4, mem_gib: int = 8, share: int = 0, **kw) -> Job:
    demand_kw = {
        k: kw.pop(k)
        for k in ("gpu_models", "min_vram_mib", "regions", "node_ids", "disk_mib", "features")
        if k in kw
    }
    return Job(jid, Demand(cpu * 1000, mem_gib * 1024, gpus, share, **demand_kw), order, **kw)


def started(d: Decisions) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in d.starts:
        out.setdefault(s.job_id, []).append(s.node_id)
    return out


def test_higher_priority_wins_scarce_capacity() -> None:
    snap = Snapshot(
        (node("n1", gpus=1),),
        pending=(job("low", 1, priority=10), job("high", 2, priority=90)),
    )
    d = schedule(snap)
    assert list(started(d)) == ["high"]
    assert [w.job_id for w in d.waiting] == ["low"]


def test_earlier_order_first_within_a_priority() -> None:
    snap = Snapshot((node("n1", gpus=2),), pending=(job("c", 3), job("a", 1), job("b", 2)))
    assert sorted(started(schedule(snap))) == ["a", "b"]


def test_retried_job_keeps_its_place() -> None:
    # the retried job was submitted first (order 1) and comes back with a later id; it must not fall behind
    newer = tuple(job(f"new-{i}", 10 + i) for i in range(3))
    snap = Snapshot((node("n1", gpus=1),), pending=(*newer, job("zz-retried", 1)))
    assert list(started(schedule(snap))) == ["zz-retried"]


@pytest.mark.flow_only  # per-task placement has the same rule, with its own tie-breaks (test_per_task.py)
def test_a_job_that_bids_is_placed_by_fit_among_the_nodes_it_affords_not_by_their_ask() -> None:
    """A bid is the price a job accepts. Without one a whole-GPU task goes to the cheaper node; with one, both
    nodes are within it and the task completes the busier node, keeping the cheaper one's GPUs whole."""
    nodes = (node("cheap", price_per_gpu_hour=0.5), node("dear", price_per_gpu_hour=1.0))
    running = (Allocation("a", "x", "dear", 4000, 8192, (0, 1, 2)),)
    assert started(schedule(Snapshot(nodes, running=running, pending=(job("j", 1),)))) == {"j": ["cheap"]}
    bids = job("j", 1, bid_per_hour=5.0)
    assert started(schedule(Snapshot(nodes, running=running, pending=(bids,)))) == {"j": ["dear"]}


def test_bid_is_never_exceeded() -> None:
    nodes = (node("dear", price_per_gpu_hour=3.0), node("cheap", price_per_gpu_hour=0.8))
    d = schedule(Snapshot(nodes, pending=(job("j", 1, gpus=1, bid_per_hour=1.0),)))
    assert started(d) == {"j": ["cheap"]}
    d = schedule(Snapshot(nodes[:1], pending=(job("j", 1, gpus=1, bid_per_hour=1.0),)))
    assert not d.starts
    assert "bid" in d.waiting[0].reason


def test_bid_covers_the_whole_gang_and_cpus() -> None:
    n = node("n", gpus=4, price_per_gpu_hour=1.0, price_per_cpu_hour=0.1)
    # 2 tasks x (1 GPU x 1.0 + 4 CPUs x 0.1) = 2.8 per hour
    assert not schedule(Snapshot((n,), pending=(job("j", 1, gang_size=2, bid_per_hour=2.7),))).starts
    assert len(schedule(Snapshot((n,), pending=(job("j", 1, gang_size=2, bid_per_hour=2.8),))).starts) == 2


def test_cheaper_ask_first_for_equal_jobs() -> None:
    nodes = (node("a", price_per_gpu_hour=2.0), node("b", price_per_gpu_hour=1.0))
    assert started(schedule(Snapshot(nodes, pending=(job("j", 1),)))) == {"j": ["b"]}


def test_speed_preference_picks_the_faster_model() -> None:
    nodes = (node("slow", model="T4"), node("fast", model="V100"))
    j = job("j", 1, speed_by_model={"V100": 2.0, "T4": 0.5})
    assert started(schedule(Snapshot(nodes, pending=(j,)))) == {"j": ["fast"]}


def test_reliability_preference() -> None:
    nodes = (node("flaky", reliability=0.8), node("solid", reliability=0.99))
    assert started(schedule(Snapshot(nodes, pending=(job("j", 1),)))) == {"j": ["solid"]}


def test_unschedulable_reasons() -> None:
    nodes = (node("n1", gpus=8, region="eu"), node("n2", gpus=4, model="T4", region="us"))
    d = schedule(
        Snapshot(
            nodes,
            pending=(
                job("many", 1, gpus=16, gpu_models=frozenset({"A100"})),
                job("where", 2, regions=frozenset({"ap"})),
                job("model", 3, gpu_models=frozenset({"H100"})),
                job("cpu", 4, cpu=500),
                job("vram", 5, min_vram_mib=80 * 1024),
                job("pinned", 6, node_ids=frozenset({"n9"})),
                job("gang", 7, gpus=8, gang_size=3),
            ),
        )
    )
    why = {u.job_id: u.reason for u in d.unschedulable}
    assert set(why) == {"many", "where", "model", "cpu", "vram", "pinned", "gang"}
    assert why["many"] == "needs 16 GPUs of A100; the largest such node has 8"
    assert "region" in why["where"]
    assert "H100" in why["model"]
    assert "500 CPUs" in why["cpu"] and "64" in why["cpu"]
    assert "VRAM" in why["vram"]
    assert "n9" in why["pinned"]
    assert "gang of 3" in why["gang"]
    assert not d.starts


def test_unschedulable_nodes_keep_work_and_take_nothing_new() -> None:
    draining = node("n1", gpus=2, schedulable=False)
    running = (Allocation("a1", "old", "n1", 1000, 1024, (0,)),)
    d = schedule(Snapshot((draining,), running=running, pending=(job("j", 1),)))
    assert not d.starts and not d.preemptions
    assert "no new work" in d.waiting[0].reason


def test_gang_is_all_or_nothing() -> None:
    three = (node("n1", gpus=4), node("n2", gpus=4), node("n3", gpus=4))
    busy = (Allocation("a", "x", "n3", 1000, 1024, (0,)),)
    d = schedule(Snapshot(three, running=busy, pending=(job("g", 1, gpus=4, gang_size=3),)))
    assert not d.starts and [w.job_id for w in d.waiting] == ["g"]
    d = schedule(Snapshot(three[:2], pending=(job("g", 1, gpus=4, gang_size=3),)))
    assert not d.starts and "gang of 3" in d.unschedulable[0].reason
    d = schedule(Snapshot(three, pending=(job("g", 1, gpus=4, gang_size=3),)))
    assert sorted(s.task_index for s in d.starts) == [0, 1, 2]
    assert sorted(s.node_id for s in d.starts) == ["n1", "n2", "n3"]


@pytest.mark.flow_only
def test_shares_go_to_the_tightest_gpu_and_whole_gpus_stay_whole() -> None:
    n = node("n", gpus=2)
    running = (Allocation("a", "x", "n", 1000, 1024, (1,), gpu_share_milli=500),)
    d = schedule(Snapshot((n,), running=running, pending=(job("s", 1, share=300),)))
    assert d.starts[0].gpu_indices == (1,)
    assert d.starts[0].gpu_share_milli == 300


def test_exact_fit_inside_a_bucket() -> None:
    # both nodes look alike at coarse resolution; only the one with more free CPU fits
    nodes = (node("a", cpu=64), node("b", cpu=64))
    running = (Allocation("r1", "x", "a", 54_000, 1024), Allocation("r2", "y", "b", 34_000, 1024))
    d = schedule(Snapshot(nodes, running=running, pending=(job("j", 1, gpus=0, cpu=20),)))
    assert started(d) == {"j": ["b"]}


def test_region_and_node_pins_are_respected() -> None:
    nodes = (node("eu1", region="eu"), node("us1", region="us"), node("us2", region="us"))
    d = schedule(
        Snapshot(
            nodes,
            pending=(job("r", 1, regions=frozenset({"us"})), job("p", 2, node_ids=frozenset({"us2"}))),
        )
    )
    got = started(d)
    assert got["r"][0].startswith("us") and got["p"] == ["us2"]


def test_required_features_are_respected_and_explained() -> None:
    box = frozenset({"container"})
    nodes = (
        node("plain-a", region="us"),
        node("engine", region="us", features=box),
        node("plain-b", region="eu"),
    )
    pending = tuple(job(f"c{i}", i, features=box) for i in range(2)) + (job("p", 9),)
    got = started(schedule(Snapshot(nodes, pending=pending)))
    assert got["c0"] == ["engine"] and got["c1"] == ["engine"]
    d = schedule(Snapshot(nodes, pending=(job("eu-box", 1, features=box, regions=frozenset({"eu"})),)))
    assert not d.starts
    assert d.unschedulable[0].reason == "needs a node with container; none has it in the requested regions"


def test_every_job_gets_one_outcome() -> None:
    nodes = tuple(node(f"n{i}", gpus=2) for i in range(3))
    pending = tuple(job(f"j{i}", i, gpus=1 + i % 3) for i in range(12))
    d = schedule(Snapshot(nodes, pending=pending))
    ids = [s.job_id for s in d.starts if s.task_index == 0] + [w.job_id for w in d.waiting]
    ids += [u.job_id for u in d.unschedulable]
    assert sorted(ids) == sorted(j.id for j in pending)


def test_low_bidders_ahead_in_the_queue_do_not_close_a_class_for_their_kind() -> None:
    # one class of equal nodes; the first jobs of the kind bid below every ask, the later ones do not bid: the
    # class stays open for them in the first packing pass, and the bidders wait with the bid as the reason
    nodes = tuple(node(f"n{i:02d}", gpus=1, price_per_gpu_hour=1.0) for i in range(12))
    low = tuple(job(f"low-{i}", i, bid_per_hour=0.1) for i in range(10))
    rest = tuple(job(f"any-{i}", 10 + i) for i in range(10))
    d = schedule(Snapshot(nodes, pending=(*low, *rest)))
    assert sorted(started(d)) == sorted(j.id for j in rest)
    assert {w.job_id for w in d.waiting} == {j.id for j in low}
    assert all("bid" in w.reason for w in d.waiting)


def test_packing_many_interchangeable_jobs_never_overcommits() -> None:
    # far more small jobs than room: every node fills to its exact CPU, memory and GPU limits, never beyond
    nodes = tuple(node(f"n{i:02d}", gpus=2, cpu=10, mem_gib=64) for i in range(20))
    jobs = tuple(job(f"j{i:03d}", i, gpus=1, share=300, cpu=3, mem_gib=8) for i in range(300))
    d = schedule(Snapshot(nodes, pending=jobs))
    per_node: dict[str, int] = {}
    for s in d.starts:
        per_node[s.node_id] = per_node.get(s.node_id, 0) + 1
    # 3 shares of 30 % fit one GPU (6 per node), but 10 CPUs hold 3 jobs of 3 CPUs
    assert set(per_node.values()) == {3}
    assert len(d.starts) == 60


def test_a_gang_that_misses_leaves_the_nodes_its_own_tasks_filled_to_the_next_gang() -> None:
    """A gang fills the cheap node with its own tasks, finds no room for the last one and gives them back; the
    node is free again, so the next gang of the kind must still see it (it once counted as full for good)."""
    cheap = node("a-cheap", gpus=2, mem_gib=256, price_per_gpu_hour=0.5)
    small = node("b-small", gpus=1, mem_gib=8, price_per_gpu_hour=2.0)
    # would take g1's third task, but is busy
    busy = node("c-busy", gpus=1, mem_gib=256, price_per_gpu_hour=1.0)
    held = (Allocation("x", "other", "c-busy", 1000, 1024, (0,)),)
    # the small node lacks the memory for one of g1's tasks; g2 fits: two tasks on the cheap node, one on the small
    big = job("g1", 1, gpus=1, mem_gib=16, gang_size=3)
    light = job("g2", 2, gpus=1, mem_gib=4, gang_size=3)
    d = schedule(Snapshot((cheap, small, busy), running=held, pending=(big, light)))
    assert sorted(started(d)["g2"]) == ["a-cheap", "a-cheap", "b-small"]
    assert [w.job_id for w in d.waiting] == ["g1"]


@pytest.mark.flow_only
def test_the_flow_plans_no_bid_kind_onto_a_class_it_cannot_afford(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every member of the dear class asks more than any job of the kind bids: an arc there could only take
    flow (and class room) that no job can use, so the plan has none."""
    import importlib

    module = importlib.import_module("ceti.fabric.schedule")
    planned: list[set[str]] = []
    real_plan = module._Round._plan

    def spy(self, level, nc, cols):  # type: ignore[no-untyped-def]
        plans = real_plan(self, level, nc, cols)
        for plan in plans:
            planned.append({self.t.ids[r] for _, c, _ in plan for r in nc.members(c)})
        return plans

    monkeypatch.setattr(module._Round, "_plan", spy)
    nodes = (node("cheap", gpus=1, price_per_gpu_hour=0.5), node("dear", gpus=4, price_per_gpu_hour=3.0))
    jobs = tuple(job(f"j{i}", i, bid_per_hour=1.0) for i in range(3))
    d = schedule(Snapshot(nodes, pending=jobs))
    assert started(d) == {"j0": ["cheap"]}
    assert planned and all("dear" not in p for p in planned)
