"""Pre-emption: only strictly lower priority, only interruptible work, the cheapest lost work, only when it
pays."""

from __future__ import annotations

import pytest

from ceti.fabric import GPU, Allocation, Demand, Job, Node, Snapshot, schedule

# every rule here holds for both placements unless marked flow_only (conftest.each_placement)
pytestmark = pytest.mark.usefixtures("each_placement")


def full_node(nid: str, gpus: int = 1) -> Node:
    return Node(nid, 16_000, 64 * 1024, tuple(GPU(i, "A100", 40960) for i in range(gpus)))


def victim(
    aid: str,
    nid: str,
    *,
    priority: int = 10,
    interruptible: bool = True,
    lost_h: float = 1.0,
    value: float = 1.0,
) -> Allocation:
    return Allocation(aid, f"job-{aid}", nid, 4000, 8192, (0,), 0, priority, interruptible, value, lost_h)


def pending(priority: int = 90, bid: float | None = None) -> Job:
    return Job("new", Demand(4000, 8192, 1), 1, priority=priority, bid_per_hour=bid)


def test_higher_priority_preempts_lower_interruptible_work() -> None:
    d = schedule(Snapshot((full_node("n1"),), running=(victim("v", "n1"),), pending=(pending(),)))
    assert [(p.allocation_id, p.job_id) for p in d.preemptions] == [("v", "job-v")]
    assert [(s.job_id, s.node_id, s.gpu_indices) for s in d.starts] == [("new", "n1", (0,))]
    assert "priority 90 > 10" in d.preemptions[0].reason


def test_never_preempts_equal_or_higher_priority() -> None:
    for prio in (90, 95):
        d = schedule(
            Snapshot((full_node("n1"),), running=(victim("v", "n1", priority=prio),), pending=(pending(),))
        )
        assert not d.preemptions and not d.starts


def test_never_preempts_non_interruptible_work() -> None:
    run = (victim("v", "n1", interruptible=False),)
    d = schedule(Snapshot((full_node("n1"),), running=run, pending=(pending(),)))
    assert not d.preemptions and not d.starts


def test_chooses_the_cheapest_lost_work() -> None:
    nodes = (full_node("n1"), full_node("n2"))
    run = (victim("dear", "n1", lost_h=5.0, value=10.0), victim("cheap", "n2", lost_h=0.5, value=10.0))
    d = schedule(Snapshot(nodes, running=run, pending=(pending(),)))
    assert [p.allocation_id for p in d.preemptions] == ["cheap"]
    assert d.starts[0].node_id == "n2"


def test_frees_one_node_with_the_cheapest_set() -> None:
    # the job needs 2 GPUs; n1's two victims cost 1 + 1, n2's single 2-GPU victim costs 5
    nodes = (full_node("n1", gpus=2), full_node("n2", gpus=2))
    run = (
        Allocation("a", "ja", "n1", 2000, 4096, (0,), 0, 10, True, 1.0, 1.0),
        Allocation("b", "jb", "n1", 2000, 4096, (1,), 0, 10, True, 1.0, 1.0),
        Allocation("c", "jc", "n2", 4000, 8192, (0, 1), 0, 10, True, 5.0, 1.0),
    )
    job = Job("new", Demand(4000, 8192, 2), 1, priority=90)
    d = schedule(Snapshot(nodes, running=run, pending=(job,)))
    assert sorted(p.allocation_id for p in d.preemptions) == ["a", "b"]
    assert d.starts[0].node_id == "n1" and d.starts[0].gpu_indices == (0, 1)


def test_preemption_must_pay_for_lost_work_when_the_job_bids() -> None:
    run = (victim("v", "n1", lost_h=5.0, value=2.0),)  # 10.0 of work thrown away
    d = schedule(Snapshot((full_node("n1"),), running=run, pending=(pending(bid=3.0),)))
    assert not d.preemptions and not d.starts
    run = (victim("v", "n1", lost_h=0.5, value=2.0),)  # 1.0 of work thrown away
    d = schedule(Snapshot((full_node("n1"),), running=run, pending=(pending(bid=3.0),)))
    assert [p.allocation_id for p in d.preemptions] == ["v"]


def test_free_room_is_used_before_preempting() -> None:
    nodes = (full_node("n1"), full_node("n2"))
    d = schedule(Snapshot(nodes, running=(victim("v", "n1"),), pending=(pending(),)))
    assert not d.preemptions and d.starts[0].node_id == "n2"


def test_gang_preemption_is_all_or_nothing() -> None:
    nodes = (full_node("n1"), full_node("n2"))
    run = (victim("v1", "n1"), victim("v2", "n2", priority=95))  # only one node can be freed
    job = Job("g", Demand(4000, 8192, 1), 1, priority=90, gang_size=2)
    d = schedule(Snapshot(nodes, running=run, pending=(job,)))
    assert not d.preemptions and not d.starts


@pytest.mark.parametrize("seed", [0, 1])
def test_victim_nodes_read_in_growing_slices_decide_as_one_read_of_all(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind filters the nodes with victims (cheapest victim first) in slices until it has enough; a slice of
    one node, and one slice of all of them, must give the same decisions."""
    from ceti.cli.bench import synthetic_snapshot
    from ceti.fabric import preemption

    snap = synthetic_snapshot(2000, 10000, seed)
    monkeypatch.setattr(preemption, "VICTIM_SCAN_ROWS", 1 << 30)
    whole = schedule(snap)
    assert whole.preemptions  # the check means something only where work was pre-empted
    monkeypatch.setattr(preemption, "VICTIM_SCAN_ROWS", 1)
    assert schedule(snap) == whole
