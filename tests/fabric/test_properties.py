"""Invariants of `schedule`, on random small networks (hypothesis)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceti.fabric import GPU, WHOLE_GPU_MILLI, Allocation, Decisions, Demand, Job, Node, Snapshot, schedule
from ceti.fabric.classes import NodeTable
from ceti.fabric.packing import Free

MODELS = ("A100", "T4", "V100")
REGIONS = ("eu", "us")
VRAM = {"A100": 40960, "T4": 16384, "V100": 32768}


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n_nodes = draw(st.integers(1, 6))
    nodes: list[Node] = []
    running: list[Allocation] = []
    for i in range(n_nodes):
        g = draw(st.integers(0, 4))
        mixed = draw(st.booleans()) and g > 1
        gpus = tuple(
            GPU(
                k,
                MODELS[(i + k) % 3] if mixed else MODELS[i % 3],
                VRAM[MODELS[(i + k) % 3 if mixed else i % 3]],
            )
            for k in range(g)
        )
        cpu = draw(st.sampled_from([4000, 16000, 64000]))
        mem = draw(st.sampled_from([8192, 65536, 262144]))
        disk = draw(st.sampled_from([0, 100_000]))
        nid = f"n{i}"
        nodes.append(
            Node(
                nid,
                cpu,
                mem,
                gpus,
                REGIONS[i % 2],
                disk,
                draw(st.sampled_from([0.0, 0.5, 2.0])),
                0.01,
                draw(st.sampled_from([0.9, 0.99, 1.0])),
                draw(st.booleans()) or i == 0,
            )
        )
        # running work that fits the node, built by construction
        free_cpu, free_mem, free_disk, gfree = cpu, mem, disk, [WHOLE_GPU_MILLI] * g
        for a in range(draw(st.integers(0, 3))):
            c = draw(st.integers(0, free_cpu))
            m = draw(st.integers(0, free_mem))
            dk = draw(st.integers(0, free_disk))
            share = draw(st.sampled_from([0, 0, 300, 500]))
            idx: tuple[int, ...] = ()
            if g and draw(st.booleans()):
                need = share or WHOLE_GPU_MILLI
                fits = [k for k in range(g) if gfree[k] >= need]
                if fits:
                    take = fits[: 1 if share else draw(st.integers(1, len(fits)))]
                    for k in take:
                        gfree[k] -= need
                    idx = tuple(take)
            if not idx:
                share = 0
            free_cpu, free_mem, free_disk = free_cpu - c, free_mem - m, free_disk - dk
            running.append(
                Allocation(
                    f"a{i}-{a}",
                    f"r{i}-{a}",
                    nid,
                    c,
                    m,
                    idx,
                    share,
                    draw(st.sampled_from([10, 50, 90])),
                    draw(st.booleans()),
                    draw(st.sampled_from([0.0, 1.0, 5.0])),
                    draw(st.sampled_from([0.0, 0.5, 3.0])),
                    dk,
                )
            )
    jobs: list[Job] = []
    for j in range(draw(st.integers(0, 10))):
        g = draw(st.integers(0, 3))
        share = draw(st.sampled_from([0, 250, 600])) if g == 1 else 0
        d = Demand(
            draw(st.sampled_from([500, 4000, 20000])),
            draw(st.sampled_from([1024, 16384, 100000])),
            g,
            share,
            frozenset(draw(st.lists(st.sampled_from(MODELS), max_size=2))) if g else frozenset(),
            draw(st.sampled_from([0, 0, 20000])) if g else 0,
            draw(st.sampled_from([0, 0, 50_000])),
            frozenset(draw(st.lists(st.sampled_from(REGIONS), max_size=1))),
            frozenset({f"n{draw(st.integers(0, n_nodes))}"}) if draw(st.integers(0, 5)) == 0 else frozenset(),
        )
        jobs.append(
            Job(
                f"j{j}",
                d,
                draw(st.integers(0, 5)),
                draw(st.sampled_from([10, 50, 90])),
                draw(st.sampled_from([1, 1, 2, 3])),
                draw(st.sampled_from([None, None, 0.5, 5.0])),
                draw(st.booleans()),
                draw(st.sampled_from([{}, {"T4": 2.0}, {"A100": 0.5, "V100": 3.0}])),
            )
        )
    return Snapshot(tuple(nodes), tuple(running), tuple(jobs))


def check_invariants(snap: Snapshot, d: Decisions) -> None:
    nodes = {n.id: n for n in snap.nodes}
    jobs = {j.id: j for j in snap.pending}
    gone = {p.allocation_id for p in d.preemptions}
    by_alloc = {a.id: a for a in snap.running}
    assert len(gone) == len(d.preemptions), "an allocation is pre-empted twice"
    # resources: running - pre-empted + starts never exceed any node's size
    use: dict[str, list] = {n.id: [0, 0, 0, {g.index: 0 for g in n.gpus}] for n in snap.nodes}
    for a in snap.running:
        if a.id in gone:
            continue
        u = use[a.node_id]
        u[0] += a.cpu_milli
        u[1] += a.memory_mib
        u[2] += a.disk_mib
        for g in a.gpu_indices:
            u[3][g] += a.gpu_milli_per_gpu
    for s in d.starts:
        job = jobs[s.job_id]
        dem = job.demand
        n = nodes[s.node_id]
        u = use[s.node_id]
        u[0] += dem.cpu_milli
        u[1] += dem.memory_mib
        u[2] += dem.disk_mib
        assert len(s.gpu_indices) == dem.gpu_count and len(set(s.gpu_indices)) == dem.gpu_count
        assert s.gpu_share_milli == dem.gpu_share_milli
        models = {g.index: g for g in n.gpus}
        for g in s.gpu_indices:
            u[3][g] += dem.gpu_milli_per_gpu
            assert not dem.gpu_models or models[g].model in dem.gpu_models
            assert models[g].vram_mib >= dem.min_vram_mib
        # constraints
        assert n.schedulable
        assert not dem.regions or n.region in dem.regions
        assert not dem.node_ids or n.id in dem.node_ids
        if job.bid_per_hour is not None:
            price = dem.gpu_count * n.price_per_gpu_hour + dem.cpu_milli / 1000 * n.price_per_cpu_hour
            assert price * job.gang_size <= job.bid_per_hour + 1e-6
    for nid, (cpu, mem, disk, gpus) in use.items():
        n = nodes[nid]
        assert cpu <= n.cpu_milli and mem <= n.memory_mib and disk <= n.disk_mib, (nid, cpu, mem, disk)
        assert all(v <= WHOLE_GPU_MILLI for v in gpus.values()), (nid, gpus)
    # gangs: all tasks or none, each task once
    tasks: dict[str, list[int]] = {}
    for s in d.starts:
        tasks.setdefault(s.job_id, []).append(s.task_index)
    for jid, idx in tasks.items():
        assert sorted(idx) == list(range(jobs[jid].gang_size)), (jid, idx)
    # pre-emption only for strictly higher priority, only interruptible work
    top = max((jobs[j].priority for j in tasks), default=None)
    for p in d.preemptions:
        a = by_alloc[p.allocation_id]
        assert a.interruptible and top is not None and a.priority < top
        assert any(
            jobs[j].priority > a.priority
            and by_alloc[p.allocation_id].node_id in {s.node_id for s in d.starts if s.job_id == j}
            for j in tasks
        )
    # every job exactly one outcome
    outcomes = list(tasks) + [w.job_id for w in d.waiting] + [u.job_id for u in d.unschedulable]
    assert sorted(outcomes) == sorted(jobs)


PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# "flow": the class flow and its packing (what rounds above the per-task size bound use); "fabric": per-task
# placement by the fabric placement policy (`fabric.per_task`, what the server runs on smaller clusters)
PLACEMENTS = pytest.mark.parametrize("placement", ["flow", "fabric"])


@PLACEMENTS
@PROPS
@given(snapshots())
def test_invariants_hold(placement: str, snap: Snapshot) -> None:
    check_invariants(snap, schedule(snap, placement))


@PLACEMENTS
@PROPS
@given(snapshots(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(placement: str, snap: Snapshot, rnd: random.Random) -> None:
    first = schedule(snap, placement)
    assert schedule(snap, placement) == first
    nodes, pending = list(snap.nodes), list(snap.pending)
    rnd.shuffle(nodes)
    rnd.shuffle(pending)
    shuffled = schedule(Snapshot(tuple(nodes), snap.running, tuple(pending)), placement)
    assert sorted(map(repr, shuffled.starts)) == sorted(map(repr, first.starts))
    assert sorted(map(repr, shuffled.preemptions)) == sorted(map(repr, first.preemptions))
    assert sorted(map(repr, shuffled.waiting)) == sorted(map(repr, first.waiting))
    assert sorted(map(repr, shuffled.unschedulable)) == sorted(map(repr, first.unschedulable))


# Larger seeded snapshots: thousands of tasks through the class packing, the chunked spill and the per-node GPU
# summaries (paths the tiny hypothesis networks rarely reach), checked against the same invariants.
@PLACEMENTS
@pytest.mark.parametrize("seed", [0, 1])
def test_invariants_hold_on_a_busy_synthetic_network(seed: int, placement: str) -> None:
    from ceti.cli.bench import synthetic_snapshot

    snap = synthetic_snapshot(300, 1000, seed)
    d = schedule(snap, placement)
    check_invariants(snap, d)
    assert len({s.job_id for s in d.starts}) > 200
    assert schedule(snap, placement) == d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_gpu_summary_tracks_the_residual(snap: Snapshot) -> None:
    """`Free.gpu_summary` (whole free GPUs, most milli free on one GPU) stays equal to the per-GPU lists
    through takes and gives."""
    t = NodeTable(snap.nodes)
    free = Free(t, snap.running)
    free.gpu_summary()
    for job in snap.pending:
        for r in range(t.n):
            pos = free.take(r, job.demand, None)
            if pos is not None and job.gang_size > 1:
                free.give(r, job.demand, pos)
    whole, most = free.gpu_summary()
    for r in range(t.n):
        assert whole[r] == sum(1 for g in free.gpu[r] if g >= WHOLE_GPU_MILLI)
        assert most[r] == max(free.gpu[r], default=-1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_gpu_fit_counts_the_gpus_a_kind_may_use(snap: Snapshot) -> None:
    """The spill's room test (per-type shortcut for nodes of one GPU type, per-GPU count for mixed nodes)
    agrees with counting, GPU by GPU, those of the kind's models and VRAM with room for its milli."""
    from ceti.fabric.classes import Need, job_kinds
    from ceti.fabric.schedule import _Round

    rnd = _Round(snap)
    t = rnd.t
    rows = np.arange(t.n)
    for k in job_kinds(snap.pending):
        if not k.gpu_count:
            continue
        need = Need(t, k)
        per = k.gpu_share_milli or WHOLE_GPU_MILLI
        fit = rnd._gpu_fit(need, rows)
        for r in range(t.n):
            usable = sum(
                1
                for g, f in zip(t.nodes[r].gpus, rnd.free.gpu[r], strict=False)
                if f >= per
                and (not k.gpu_models or g.model in k.gpu_models)
                and g.vram_mib >= k.min_vram_mib
            )
            if k.gpu_share_milli and k.gpu_count == 1:
                assert (fit[r] >= 1) == (usable >= 1)
            else:
                assert fit[r] == usable


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(-3, 3), min_size=n, max_size=n),
            st.lists(st.sampled_from([0.0, 0.5, 1.25, -2.0, float("inf"), float("nan")]), min_size=n, max_size=n),
            st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n),
        )
    )
)
def test_lex_order_is_a_stable_lexicographic_sort(cols: tuple[list, list, list]) -> None:
    """Node classes order their members with `lex_order`; it must be exactly `np.lexsort` (first key primary,
    ties by position), including where the packed code would not fit in 64 bits or a key holds NaN and it falls
    back."""
    from ceti.fabric.classes import lex_order

    keys = (np.array(cols[0], np.int64), np.array(cols[1], np.float64), np.array(cols[2], np.int64))
    assert lex_order(keys).tolist() == np.lexsort(keys[::-1]).tolist()
    assert lex_order(keys[:2]).tolist() == np.lexsort(keys[1::-1]).tolist()


def test_a_round_pauses_the_cyclic_collector_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round keeps the cyclic collector off while it runs (it would walk the snapshot's objects many times)
    and leaves it as it found it, on or off."""
    import gc
    import importlib

    from ceti.cli.bench import synthetic_snapshot

    module = importlib.import_module("ceti.fabric.schedule")  # the package re-exports the function by this name
    real_job_kinds = module.job_kinds
    seen: list[bool] = []

    def spy(pending: tuple[Job, ...]) -> object:
        seen.append(gc.isenabled())
        return real_job_kinds(pending)

    monkeypatch.setattr(module, "job_kinds", spy)
    snap = synthetic_snapshot(20, 30, 0)
    was = gc.isenabled()
    try:
        gc.enable()
        schedule(snap)
        assert gc.isenabled()
        gc.disable()
        schedule(snap)
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]


@pytest.mark.parametrize("case", ["flow", "per task", "every compiled path", "multi-node"])
def test_a_round_leaves_no_reference_cycles(case: str) -> None:
    """A round's state is freed by reference counting as it returns: nothing it leaves behind needs the cyclic
    collector (which would otherwise walk the whole round to find it, after the round, on the caller's time).
    Cases: the class flow, task by task, the warm-up's round (every compiled path, gangs and pins), and a
    multi-node gang beside single tasks."""
    import dataclasses
    import gc

    from ceti.cli.bench import synthetic_snapshot
    from ceti.fabric.warm import warm_snapshot

    placement = "fabric" if case == "per task" else "flow"
    if case == "every compiled path":
        snap = warm_snapshot()
    elif case == "multi-node":
        warm = warm_snapshot()
        nodes = tuple(dataclasses.replace(n, network="lab") for n in warm.nodes)
        ray = Job("ray", Demand(2_000, 4_096, 1), 99, gang_size=3, one_per_node=True)
        snap = dataclasses.replace(warm, nodes=nodes, pending=(*warm.pending, ray))
    else:
        snap = synthetic_snapshot(300 if case == "flow" else 40, 2000 if case == "flow" else 60, 1)
    schedule(snap, placement)  # compiled kernels and lazy imports loaded first
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        decisions = schedule(snap, placement)
        assert gc.collect() == 0
    finally:
        (gc.enable if was else gc.disable)()
    assert decisions.starts and decisions.preemptions  # the pre-emptor, which adds starts, took part


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gang_spill_reads_its_rows_in_growing_prefixes_with_the_same_decisions(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spilled gang scans a prefix of its candidate rows and more on a miss; that must decide exactly as one
    scan of every row does (a prefix of one row makes nearly every gang miss and grow)."""
    import importlib

    from ceti.cli.bench import synthetic_snapshot

    module = importlib.import_module("ceti.fabric.schedule")
    snap = synthetic_snapshot(300, 1500, seed)
    monkeypatch.setattr(module, "GANG_SCAN_ROWS", 1 << 30)
    whole = schedule(snap)
    monkeypatch.setattr(module, "GANG_SCAN_ROWS", 1)
    assert schedule(snap) == whole
    assert any(s.task_index > 0 for s in whole.starts)  # gangs were placed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_spill_skips_jobs_that_failed_before_with_the_same_decisions(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the spill, kinds that ask the same of a node share their failures, and a job that asks no less and
    bids no more than one that read every candidate in vain is not scanned for; the round must decide the same
    (as sets: fewer jobs scanned change the chunks, so the order starts are written in) as when every kind
    scans for itself."""
    import importlib
    import inspect

    from ceti.cli.bench import synthetic_snapshot

    module = importlib.import_module("ceti.fabric.schedule")
    snap = synthetic_snapshot(2000, 10000, seed)  # queues long enough that the spill sees many failures
    shared = schedule(snap)
    real = module.kernels.spill_kinds
    at = list(inspect.signature(real.py_func).parameters).index("lookups")
    asked: list[int] = []

    def alone(*args: object) -> int:
        args = list(args)
        ask = args[at].ask
        asked.append(len(ask) - len(set(ask.tolist())))  # kinds that would share
        args[at] = args[at]._replace(ask=np.arange(len(ask), dtype=np.int64))
        return real(*args)

    monkeypatch.setattr(module.kernels, "spill_kinds", alone)
    each = schedule(snap)
    assert sum(asked) > 0
    for name in ("starts", "preemptions", "waiting", "unschedulable"):
        assert sorted(map(repr, getattr(each, name))) == sorted(map(repr, getattr(shared, name)))



@PROPS
@given(snapshots(), st.randoms(use_true_random=False))
def test_kinds_know_where_their_jobs_are_in_a_queue_of_any_order(snap: Snapshot, rnd: random.Random) -> None:
    """The round reads each job's numbers by its position in `pending` (`JobKind.at`), whatever order the
    queue came in (`test_deterministic_and_independent_of_input_order` checks the decisions)."""
    from ceti.fabric.classes import job_kinds

    shuffled = list(snap.pending)
    rnd.shuffle(shuffled)
    for k in job_kinds(shuffled):
        assert [shuffled[i] for i in k.at] == k.jobs


@PROPS
@given(snapshots(), st.integers(1, 4))
def test_the_compiled_static_check_agrees_with_static_misfit(snap: Snapshot, gang: int) -> None:
    """`_Round._static_fits` (one compiled call for all kinds) says a kind fits exactly where `static_misfit`
    gives its largest ask no reason, gangs included; kinds pinned to nodes are left to `static_misfit`."""
    import dataclasses

    from ceti.fabric.classes import Need, job_kinds
    from ceti.fabric.schedule import _Round, static_misfit

    pending = tuple(dataclasses.replace(j, gang_size=gang) if j.gang_size == 1 else j for j in snap.pending)
    rnd = _Round(dataclasses.replace(snap, pending=pending))
    t = rnd.t
    rnd.shapes = t.shape_groups()
    rows, weight, _, _ = rnd.shapes
    kinds = job_kinds(pending)
    needs = [Need(t, k) for k in kinds]
    big = [
        dataclasses.replace(
            k.jobs[0].demand,
            cpu_milli=max(j.demand.cpu_milli for j in k.jobs),
            memory_mib=max(j.demand.memory_mib for j in k.jobs),
            disk_mib=max(j.demand.disk_mib for j in k.jobs),
        )
        for k in kinds
    ]
    fast = rnd._static_fits(
        needs,
        *(np.array([getattr(d, f) for d in big], np.int64) for f in ("cpu_milli", "memory_mib", "disk_mib")),
    )
    for k, need, d, got in zip(kinds, needs, big, fast, strict=True):
        if need.node_rows is not None:
            assert not got
            continue
        assert got == (static_misfit(t, d, k.gang_size, need, rows, weight) is None), (k, d)


@PROPS
@given(snapshots())
def test_a_node_table_reads_shared_gpu_lists_as_it_reads_separate_ones(snap: Snapshot) -> None:
    """Nodes of one make share their GPU tuple (`shared_gpus`) and the table reads each distinct tuple once;
    it must hold the same columns as when every node has its own tuple, GPU indices that are not 0..k-1
    included."""
    import dataclasses

    from ceti.fabric import shared_gpus

    odd = (GPU(3, "A100", 40_960), GPU(1, "T4", 16_384))
    nodes = [*snap.nodes, Node("odd-a", 8000, 8192, odd), Node("odd-b", 8000, 8192, odd)]
    twice = nodes + [dataclasses.replace(nd, id=nd.id + "-twin") for nd in nodes]  # every list at least twice
    shared = [
        dataclasses.replace(nd, gpus=shared_gpus((g.index, g.model, g.vram_mib) for g in nd.gpus)) for nd in twice
    ]
    separate = [dataclasses.replace(nd, gpus=tuple(dataclasses.replace(g) for g in nd.gpus)) for nd in twice]
    a, b = NodeTable(shared), NodeTable(separate)
    for name in ("gpu_count", "gpu_model", "gpu_valid", "gpu_vram", "gpu_type", "homogeneous"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.model_names == b.model_names
    assert a._pos_of_index == b._pos_of_index and a._pos_of_index
    r = a.index["odd-a"]
    assert sorted(a.gpu_indices(r, [0, 1])) == [1, 3]
