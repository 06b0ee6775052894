"""Multi-node jobs (`Job.one_per_node`): one task per node, one network label, one GPU model, all or nothing."""

from __future__ import annotations

import random

import pytest

from ceti.fabric import GPU, Allocation, Decisions, Demand, Job, Node, Snapshot, schedule

# every rule here holds for both placements unless marked flow_only (conftest.each_placement)
pytestmark = pytest.mark.usefixtures("each_placement")


def node(nid: str, net: str = "lab-a", gpus: int = 4, model: str = "A100", **kw) -> Node:
    cpu = kw.pop("cpu", 32)
    mem_gib = kw.pop("mem_gib", 128)
    return Node(
        nid, cpu * 1000, mem_gib * 1024, tuple(GPU(i, model, 40960) for i in range(gpus)), network=net, **kw
    )


def gang(jid: str, n: int, gpus: int = 1, order: int = 1, **kw) -> Job:
    cpu = kw.pop("cpu", 4)
    d = Demand(cpu * 1000, 8 * 1024, gpus, gpu_models=kw.pop("gpu_models", frozenset()))
    return Job(jid, d, order, gang_size=n, one_per_node=True, **kw)


def single(jid: str, gpus: int = 1, order: int = 1, **kw) -> Job:
    return Job(jid, Demand(4000, 8 * 1024, gpus), order, **kw)


def hold(
    aid: str, nid: str, gpus: tuple[int, ...], *, priority: int = 10, interruptible: bool = True, **kw
) -> Allocation:
    return Allocation(
        aid,
        f"job-{aid}",
        nid,
        4000,
        8192,
        gpus,
        priority=priority,
        interruptible=interruptible,
        value_per_hour=kw.get("value", 1.0),
        lost_work_hours=kw.get("lost_h", 1.0),
    )


def nodes_of(d: Decisions, job_id: str) -> list[str]:
    return [s.node_id for s in sorted(d.starts, key=lambda s: s.task_index) if s.job_id == job_id]


def test_every_task_on_a_node_of_its_own() -> None:
    nodes = tuple(node(f"n{i}", gpus=8) for i in range(4))
    d = schedule(Snapshot(nodes, pending=(gang("g", 3),)))
    starts = [s for s in d.starts if s.job_id == "g"]
    assert sorted(s.task_index for s in starts) == [0, 1, 2]
    assert len({s.node_id for s in starts}) == 3
    assert not d.waiting and not d.unschedulable
    # an ordinary gang of the same shape shares a node
    plain = Job("p", Demand(4000, 8192, 1), 1, gang_size=3)
    assert len(set(nodes_of(schedule(Snapshot(nodes, pending=(plain,))), "p"))) == 1


def test_never_across_labels() -> None:
    nodes = (node("a1"), node("a2"), node("b1", "lab-b"), node("b2", "lab-b"))
    d = schedule(Snapshot(nodes, pending=(gang("g", 3),)))
    assert not d.starts
    [u] = d.unschedulable
    assert "needs 3 nodes of one network" in u.reason and "the largest such group has 2" in u.reason
    assert "'lab-a'" in u.reason and "'lab-b'" in u.reason


def test_takes_the_label_that_has_enough_nodes() -> None:
    nodes = (node("a1"), node("a2"), node("b1", "lab-b"), node("b2", "lab-b"), node("b3", "lab-b"))
    d = schedule(Snapshot(nodes, pending=(gang("g", 3),)))
    assert sorted(nodes_of(d, "g")) == ["b1", "b2", "b3"]


def test_unlabelled_nodes_never_host_a_multi_node_job() -> None:
    bare = tuple(node(f"n{i}", net="") for i in range(4))
    d = schedule(Snapshot(bare, pending=(gang("g", 2),)))
    assert not d.starts
    assert "must declare" in d.unschedulable[0].reason and "network label" in d.unschedulable[0].reason
    d = schedule(Snapshot((*bare, node("a1")), pending=(gang("g", 2),)))
    assert not d.starts
    assert "4 more such nodes declare no network label" in d.unschedulable[0].reason
    # a one_per_node job of one task is an ordinary task: no label needed
    d = schedule(Snapshot(bare, pending=(gang("g", 1),)))
    assert len(nodes_of(d, "g")) == 1


def test_one_gpu_model_unless_mixed() -> None:
    nodes = (node("a1"), node("a2"), node("h1", model="H100"), node("h2", model="H100"))
    d = schedule(Snapshot(nodes, pending=(gang("g", 4),)))
    assert not d.starts
    assert "mixed_gpu_models" in d.unschedulable[0].reason
    d = schedule(Snapshot(nodes, pending=(gang("g", 4, mixed_gpu_models=True),)))
    assert sorted(nodes_of(d, "g")) == ["a1", "a2", "h1", "h2"]
    d = schedule(Snapshot(nodes, pending=(gang("g", 2),)))
    assert sorted(nodes_of(d, "g")) in (["a1", "a2"], ["h1", "h2"])


def test_one_model_on_a_node_with_two_models() -> None:
    mixed = Node("m1", 32_000, 128 * 1024, (GPU(0, "A100", 40960), GPU(1, "H100", 81920)), network="lab-a")
    nodes = (mixed, node("h1", model="H100"))
    d = schedule(Snapshot(nodes, pending=(gang("g", 2),)))
    by_node = {s.node_id: s.gpu_indices for s in d.starts}
    assert by_node == {"m1": (1,), "h1": (0,)}


def test_all_or_nothing_when_one_node_short() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1), node("n3", gpus=1))
    busy = (hold("x", "n3", (0,), interruptible=False),)
    d = schedule(Snapshot(nodes, running=busy, pending=(gang("g", 3),)))
    assert not d.starts and not d.preemptions and not d.unschedulable
    [w] = d.waiting
    assert "waiting for 3 nodes of one network" in w.reason and "the most with room now is 2" in w.reason


def test_draining_nodes_take_no_task() -> None:
    nodes = (node("n1"), node("n2"), node("n3", schedulable=False))
    d = schedule(Snapshot(nodes, pending=(gang("g", 3),)))
    assert not d.starts
    assert "draining or lost" in d.waiting[0].reason


def test_a_task_too_big_for_any_node_is_unschedulable() -> None:
    nodes = tuple(node(f"n{i}") for i in range(4))
    d = schedule(Snapshot(nodes, pending=(gang("g", 2, gpus=8),)))
    assert not d.starts
    assert "needs 8 GPUs" in d.unschedulable[0].reason


def test_preempts_lower_priority_interruptible_work_to_complete_the_gang() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1), node("n3", gpus=1))
    run = (hold("v", "n3", (0,), priority=10),)
    d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 3, priority=90),)))
    assert [p.allocation_id for p in d.preemptions] == ["v"]
    assert sorted(nodes_of(d, "g")) == ["n1", "n2", "n3"]
    assert sorted(s.task_index for s in d.starts) == [0, 1, 2]


def test_preempts_the_cheapest_lost_work() -> None:
    nodes = tuple(node(f"n{i}", gpus=1) for i in range(4))
    run = tuple(hold(f"v{i}", f"n{i}", (0,), lost_h=float(c)) for i, c in enumerate((5, 1, 3, 2)))
    d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 3, priority=90),)))
    assert sorted(p.allocation_id for p in d.preemptions) == ["v1", "v2", "v3"]
    assert sorted(nodes_of(d, "g")) == ["n1", "n2", "n3"]


def test_never_preempts_higher_priority_or_non_interruptible_work() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1), node("n3", gpus=1))
    for blocker in (hold("x", "n3", (0,), priority=95), hold("x", "n3", (0,), interruptible=False)):
        run = (hold("v", "n2", (0,)), blocker)
        d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 3, priority=90),)))
        assert not d.preemptions and not d.starts  # n2's victim alone would not make room for the gang
        assert "waiting for 3 nodes" in d.waiting[0].reason


def test_preemption_must_pay_when_the_gang_bids() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1))
    run = (hold("v", "n2", (0,), lost_h=5.0, value=2.0),)  # 10.0 of work thrown away
    d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 2, priority=90, bid_per_hour=3.0),)))
    assert not d.preemptions and not d.starts
    run = (hold("v", "n2", (0,), lost_h=0.5, value=2.0),)
    d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 2, priority=90, bid_per_hour=3.0),)))
    assert [p.allocation_id for p in d.preemptions] == ["v"] and len(d.starts) == 2


def test_priority_order_against_ordinary_jobs() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1))
    d = schedule(Snapshot(nodes, pending=(single("s", priority=90), gang("g", 2, order=0, priority=10))))
    assert nodes_of(d, "s") and not nodes_of(d, "g")
    assert [w.job_id for w in d.waiting] == ["g"]
    d = schedule(Snapshot(nodes, pending=(single("s", order=0, priority=10), gang("g", 2, priority=90))))
    assert sorted(nodes_of(d, "g")) == ["n1", "n2"] and not nodes_of(d, "s")


def test_queue_order_within_a_level() -> None:
    nodes = (node("n1", gpus=1), node("n2", gpus=1))
    d = schedule(Snapshot(nodes, pending=(gang("late", 2, order=5), gang("early", 2, order=1))))
    assert sorted(nodes_of(d, "early")) == ["n1", "n2"] and not nodes_of(d, "late")


def test_bid_covers_every_task() -> None:
    nodes = (
        node("cheap1", price_per_gpu_hour=0.5),
        node("cheap2", price_per_gpu_hour=0.5),
        node("dear", price_per_gpu_hour=3.0),
    )
    d = schedule(Snapshot(nodes, pending=(gang("g", 2, bid_per_hour=1.0),)))
    assert sorted(nodes_of(d, "g")) == ["cheap1", "cheap2"]
    d = schedule(Snapshot(nodes, pending=(gang("g", 3, bid_per_hour=1.5),)))
    assert not d.starts
    assert "bid $1.50/h" in d.waiting[0].reason and "cheapest such gang $9.00/h" in d.waiting[0].reason


def test_best_fit_keeps_empty_nodes_whole_and_head_on_the_most_reliable_node() -> None:
    nodes = (
        node("empty1", gpus=8),
        node("empty2", gpus=8, reliability=0.999),
        node("half", gpus=8, reliability=0.99),
        node("empty3", gpus=8),
    )
    run = (hold("x", "half", (0, 1, 2, 3), interruptible=False),)
    d = schedule(Snapshot(nodes, running=run, pending=(gang("g", 2, gpus=4),)))
    placed = nodes_of(d, "g")
    assert "half" in placed and len(placed) == 2
    assert placed[0] != "half"  # the head: the chosen node most likely to stay up
    by_node = {s.node_id: s.gpu_indices for s in d.starts}
    assert by_node["half"] == (4, 5, 6, 7)


def test_cpu_only_gang_stays_off_gpu_nodes() -> None:
    nodes = (node("g1"), node("g2"), node("c1", gpus=0), node("c2", gpus=0))
    d = schedule(Snapshot(nodes, pending=(gang("g", 2, gpus=0),)))
    assert sorted(nodes_of(d, "g")) == ["c1", "c2"]
    assert all(s.gpu_indices == () for s in d.starts)


def random_snapshot(rng: random.Random) -> Snapshot:
    nodes = []
    for i in range(rng.randint(4, 24)):
        gpus = rng.choice([0, 1, 2, 4])
        nodes.append(
            node(
                f"n{i:02d}",
                net=rng.choice(["", "lab-a", "lab-a", "lab-b", "lab-c"]),
                gpus=gpus,
                model=rng.choice(["A100", "H100"]),
                cpu=rng.choice([8, 32]),
                schedulable=rng.random() > 0.1,
                price_per_gpu_hour=rng.choice([0.5, 1.0, 2.0]),
            )
        )
    running = []
    for i, n in enumerate(nodes):
        if n.gpus and rng.random() < 0.4:
            running.append(
                hold(f"r{i}", n.id, (0,), priority=rng.choice([10, 50]), interruptible=rng.random() < 0.7)
            )
    pending: list[Job] = []
    for i in range(rng.randint(1, 10)):
        prio, bid = rng.choice([10, 50, 90]), rng.choice([None, None, 3.0, 20.0])
        if rng.random() < 0.6:
            pending.append(
                gang(
                    f"g{i}",
                    rng.randint(2, 4),
                    gpus=rng.choice([0, 1, 2]),
                    order=i,
                    priority=prio,
                    bid_per_hour=bid,
                    mixed_gpu_models=rng.random() < 0.3,
                )
            )
        else:
            pending.append(single(f"s{i}", gpus=rng.choice([0, 1]), order=i, priority=prio, bid_per_hour=bid))
    return Snapshot(tuple(nodes), tuple(running), tuple(pending))


def check(snap: Snapshot, d: Decisions) -> None:
    nodes = {n.id: n for n in snap.nodes}
    jobs = {j.id: j for j in snap.pending}
    gone = {p.allocation_id for p in d.preemptions}
    used = {n.id: [0, {g.index: 0 for g in n.gpus}] for n in snap.nodes}
    for a in snap.running:
        if a.id not in gone:
            used[a.node_id][0] += a.cpu_milli
            for g in a.gpu_indices:
                used[a.node_id][1][g] += 1000
    by_job: dict[str, list] = {}
    for s in d.starts:
        by_job.setdefault(s.job_id, []).append(s)
        used[s.node_id][0] += jobs[s.job_id].demand.cpu_milli
        for g in s.gpu_indices:
            used[s.node_id][1][g] += 1000
    for nid, (cpu, gpus) in used.items():
        assert cpu <= nodes[nid].cpu_milli and all(v <= 1000 for v in gpus.values()), nid
    for jid, starts in by_job.items():
        job = jobs[jid]
        assert sorted(s.task_index for s in starts) == list(range(job.gang_size))
        placed = [nodes[s.node_id] for s in starts]
        assert all(n.schedulable for n in placed)
        if job.one_per_node and job.gang_size > 1:
            assert len({n.id for n in placed}) == job.gang_size
            assert len({n.network for n in placed}) == 1 and placed[0].network
            models = {n.gpus[g].model for s, n in zip(starts, placed, strict=True) for g in s.gpu_indices}
            assert len(models) <= 1 or job.mixed_gpu_models
        if job.bid_per_hour is not None:
            d0 = job.demand
            for n in placed:
                price = d0.gpu_count * n.price_per_gpu_hour + d0.cpu_milli / 1000 * n.price_per_cpu_hour
                assert price * job.gang_size <= job.bid_per_hour + 1e-6
    running = {a.id: a for a in snap.running}
    for p in d.preemptions:
        a = running[p.allocation_id]
        assert a.interruptible
        assert any(jobs[s.job_id].priority > a.priority for s in d.starts if s.node_id == a.node_id)
    outcomes = list(by_job) + [w.job_id for w in d.waiting] + [u.job_id for u in d.unschedulable]
    assert sorted(outcomes) == sorted(jobs)


def test_invariants_on_random_networks() -> None:
    rng = random.Random(7)
    for _ in range(40):
        snap = random_snapshot(rng)
        d = schedule(snap)
        check(snap, d)
        nodes, pending = list(snap.nodes), list(snap.pending)
        rng.shuffle(nodes)
        rng.shuffle(pending)
        again = schedule(Snapshot(tuple(nodes), snap.running, tuple(pending)))
        assert sorted(map(repr, again.starts)) == sorted(map(repr, d.starts))
        assert sorted(map(repr, again.waiting)) == sorted(map(repr, d.waiting))
