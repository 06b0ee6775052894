"""Per-task placement (`schedule(..., placement="fabric")`): economics first, then the placement policy; what
it learns; when the round falls back to the class flow. The rules both placements share run under each in
test_schedule_rules.py, test_preemption_rules.py and test_multinode.py."""

from __future__ import annotations

import importlib

import pytest

from ceti.fabric import GPU, Allocation, Demand, Job, Node, Snapshot, schedule
from ceti.fabric.per_task import learnt_workload, placement_names
from ceti.fabric.placement.workload import TaskClass

per_task = importlib.import_module("ceti.fabric.per_task")


def node(nid: str, gpus: int = 2, model: str = "A100", *, price: float = 1.0, cpu: int = 64) -> Node:
    return Node(
        nid,
        cpu * 1000,
        256 * 1024,
        tuple(GPU(i, model, 40960) for i in range(gpus)),
        price_per_gpu_hour=price,
    )


def share_job(jid: str, order: int, milli: int, **kw) -> Job:
    return Job(jid, Demand(4000, 8192, 1, milli, **kw), order)


def half_used(nid: str) -> Allocation:
    """A running half-GPU share on GPU 1 of `nid`."""
    return Allocation(f"a-{nid}", f"x-{nid}", nid, 4000, 8192, (1,), gpu_share_milli=500)


# whole-GPU work on a full node "c": half a GPU left idle is a fragment to the learnt workload
FULL = (node("c", gpus=1), Allocation("w", "x-w", "c", 8000, 8192, (0,)))


def test_a_share_completes_a_half_used_gpu_among_nodes_of_equal_cost() -> None:
    """FGD's measure: a 500 share onto the GPU that has 500 left beats breaking an idle GPU (which leaves half a
    GPU that whole-GPU work cannot use) on either node."""
    c, whole = FULL
    snap = Snapshot(
        (node("a"), node("b"), c), running=(half_used("b"), whole), pending=(share_job("s", 1, 500),)
    )
    (start,) = schedule(snap, "fabric").starts
    assert (start.node_id, start.gpu_indices) == ("b", (1,))


def test_a_cheaper_node_wins_over_a_better_fit() -> None:
    """Economics first: the half-used GPU is on a node that asks twice as much, so the share goes to the
    cheaper node; a node within the cost tolerance counts as equal and the better fit wins again."""
    c, whole = FULL
    running = (half_used("b"), whole)
    pending = (share_job("s", 1, 500),)
    dear = Snapshot((node("a"), node("b", price=2.0), c), running=running, pending=pending)
    assert schedule(dear, "fabric").starts[0].node_id == "a"
    near = Snapshot((node("a"), node("b", price=1.005), c), running=running, pending=pending)
    assert [(s.node_id, s.gpu_indices) for s in schedule(near, "fabric").starts] == [("b", (1,))]


def test_a_constrained_task_on_a_node_of_mixed_models_gets_only_its_model() -> None:
    mixed = Node("m", 64_000, 256 * 1024, (GPU(0, "A100", 40960), GPU(1, "T4", 16384)))
    whole = Job("w", Demand(4000, 8192, 1, gpu_models=frozenset({"T4"})), 1)
    share = share_job("s", 2, 300, gpu_models=frozenset({"T4"}))
    d = schedule(Snapshot((mixed,), pending=(whole,)), "fabric")
    assert [s.gpu_indices for s in d.starts] == [(1,)]
    d = schedule(Snapshot((mixed,), pending=(share,)), "fabric")
    assert [s.gpu_indices for s in d.starts] == [(1,)]
    two = Job("two", Demand(4000, 8192, 2, gpu_models=frozenset({"T4"})), 3)
    d = schedule(Snapshot((mixed,), pending=(two,)), "fabric")
    assert not d.starts and [w.job_id for w in d.unschedulable + d.waiting] == ["two"]


def test_tasks_of_a_level_go_in_queue_order_across_kinds() -> None:
    """One node with one GPU: the earliest job of the level gets it, whatever its kind."""
    jobs = (share_job("late-share", 5, 500), Job("early-whole", Demand(4000, 8192, 1), 1))
    d = schedule(Snapshot((node("a", gpus=1),), pending=jobs), "fabric")
    assert [s.job_id for s in d.starts] == ["early-whole"]


def test_the_workload_is_learnt_per_task_from_what_runs_and_waits() -> None:
    running = (half_used("b"), Allocation("c", "y", "a", 8000, 1024, (0, 1), gpu_models=frozenset({"A100"})))
    pending = (
        Job("g", Demand(2000, 1024, 1, gpu_models=frozenset({"T4", "A10"})), 1, gang_size=3),
        Job("cpu", Demand(1000, 1024), 2),
    )
    wl = learnt_workload(Snapshot((node("a"), node("b")), running=running, pending=pending))
    got = dict(zip(wl.classes, wl.probability, strict=True))
    assert got[TaskClass(2000, 1000, 1, "A10|T4")] == pytest.approx(3 / 6)  # a gang counts once per task
    assert got[TaskClass(4000, 500, 1, "")] == pytest.approx(1 / 6)
    assert got[TaskClass(8000, 1000, 2, "A100")] == pytest.approx(1 / 6)  # running work's models count too
    assert got[TaskClass(1000, 0, 0, "")] == pytest.approx(1 / 6)


def test_only_the_most_popular_classes_are_learnt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(per_task, "MAX_CLASSES", 2)
    pending = tuple(
        Job(f"j{i}", Demand(1000 * (1 + i % 3), 1024), i) for i in range(7)
    )  # 3 x 1, 2 x 2, 2 x 3
    wl = learnt_workload(Snapshot((node("a"),), pending=pending))
    assert len(wl.classes) == 2 and wl.classes[0] == TaskClass(1000, 0, 0, "")
    assert sum(wl.probability) == pytest.approx(1.0)


def test_a_round_too_large_to_score_every_node_per_task_uses_the_class_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same snapshot, where the two placements choose different GPUs: above the size bound "fabric"
    decides as "flow" does."""
    snap = Snapshot((node("n"),), running=(half_used("n"),), pending=(share_job("s", 1, 300),))
    assert schedule(snap, "fabric").starts != schedule(snap, "flow").starts
    monkeypatch.setattr(per_task, "POLICY_MAX_NODES", 0)
    assert schedule(snap, "fabric") == schedule(snap, "flow")
    monkeypatch.setattr(per_task, "POLICY_MAX_NODES", 10)
    monkeypatch.setattr(per_task, "POLICY_MAX_WORK", 0)
    assert schedule(snap, "fabric") == schedule(snap, "flow")


def test_every_placement_policy_can_place_a_round() -> None:
    snap = Snapshot((node("a"), node("b")), running=(half_used("b"),), pending=(share_job("s", 1, 500),))
    for name in placement_names():
        (start,) = schedule(snap, name).starts
        assert start.node_id in {"a", "b"}


def test_an_unknown_placement_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown placement 'best'; known: flow, random, first-fit"):
        schedule(Snapshot((node("a"),)), "best")


def test_a_job_with_a_bid_takes_the_better_fit_among_the_nodes_it_affords() -> None:
    """A bid is the price the job accepts: among nodes within it, fit decides, not the ask; a node above the
    bid is never used."""
    c, whole = FULL
    running = (half_used("b"), whole)
    bid = Job("s", Demand(4000, 8192, 1, 500), 1, bid_per_hour=2.5)
    snap = Snapshot((node("a"), node("b", price=2.0), c), running=running, pending=(bid,))
    assert [(s.node_id, s.gpu_indices) for s in schedule(snap, "fabric").starts] == [("b", (1,))]
    poor = Job("s", Demand(4000, 8192, 1, 500), 1, bid_per_hour=1.5)
    snap = Snapshot((node("a"), node("b", price=2.0), c), running=running, pending=(poor,))
    assert [s.node_id for s in schedule(snap, "fabric").starts] == ["a"]


def test_speed_still_decides_for_a_job_with_a_bid() -> None:
    fast = Job("f", Demand(4000, 8192, 1), 1, bid_per_hour=10.0, speed_by_model={"H100": 2.0})
    nodes = (node("a", model="A100"), node("h", model="H100", price=3.0))
    assert [s.node_id for s in schedule(Snapshot(nodes, pending=(fast,)), "fabric").starts] == ["h"]


def test_the_workload_is_learnt_from_the_arrivals_when_the_snapshot_has_them() -> None:
    """Arrivals are the mix of work to come; running work over-counts what runs long, so it is not read then."""
    running = (half_used("b"),)
    arrivals = ((Demand(2000, 1024, 1), 1), (Demand(2000, 1024, 1), 1), (Demand(1000, 1024), 2))
    snap = Snapshot(
        (node("a"), node("b")), running=running, pending=(share_job("s", 1, 300),), arrivals=arrivals
    )
    wl = learnt_workload(snap)
    assert dict(zip(wl.classes, wl.probability, strict=True)) == {
        TaskClass(2000, 1000, 1, ""): pytest.approx(0.5),
        TaskClass(1000, 0, 0, ""): pytest.approx(0.5),  # one job of two tasks
    }
    assert learnt_workload(snap) is wl  # the same arrivals: learnt once
    again = Snapshot(
        snap.nodes, running=running, arrivals=arrivals[:1] + arrivals[1:]
    )  # equal, another tuple
    assert learnt_workload(again) == wl


def test_an_arrival_window_keeps_the_latest_and_one_tuple_between_arrivals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(per_task, "ARRIVAL_WINDOW", 2)
    window = per_task.ArrivalWindow()
    for cpu in (1000, 2000, 3000):
        window.add(Demand(cpu, 1024))
    first = window.arrivals()
    assert [d.cpu_milli for d, _ in first] == [2000, 3000] and window.arrivals() is first
    window.add(Demand(4000, 1024), 3)
    assert [(d.cpu_milli, n) for d, n in window.arrivals()] == [(3000, 1), (4000, 3)]
