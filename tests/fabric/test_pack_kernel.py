"""The compiled loops against the rules they compile: the flow's arc costs against `arc_cost`, and the
packing's GPU choice against `packing.choose_gpus`."""

from __future__ import annotations

import numpy as np
import pytest

from ceti.fabric import flow, kernels
from ceti.fabric.classes import JobKind
from ceti.fabric.packing import choose_gpus
from ceti.fabric.schedule import _COST_SCALE, MAX_ARCS_PER_KIND, MIN_ARCS_PER_KIND, arc_cost


def _kind(gpus: int, share: int, horizon: float) -> JobKind:
    return JobKind(50, 1, gpus, share, frozenset(), 0, frozenset(), frozenset(), frozenset(), (), horizon)


@pytest.mark.parametrize(
    ("gpus", "share", "horizon", "bid"),
    [(1, 0, 1.0, np.inf), (2, 0, 8.0, np.inf), (1, 300, 1.0, 9.0), (0, 0, 32.0, np.inf), (4, 500, 2.0, 50.0)],
)
def test_plan_arcs_cost_each_class_as_arc_cost_does(
    gpus: int, share: int, horizon: float, bid: float
) -> None:
    rng = np.random.default_rng(gpus * 100 + share)
    C = 40
    cls = {
        "cpu_mean": rng.uniform(0, 64_000, C),
        "mem_mean": rng.uniform(0, 256_000, C),
        "count": rng.integers(1, 9, C),
        "whole": rng.integers(0, 9, C),
        "partial_min": rng.integers(-1, 1000, C),
        "price_gpu": rng.uniform(0.1, 4, C),
        "price_cpu": rng.uniform(0.0, 0.1, C),
        "reliability": rng.uniform(0.5, 1.0, C),
    }
    speed = rng.uniform(0.5, 3, C)
    cpu, mem = 4_000.0, 16_384.0
    arcs = [np.empty(C, np.int64) for _ in range(4)]
    kinds = kernels.FlowKinds(
        np.array([100], np.int64), np.array([cpu]), np.array([mem]), np.array([cpu]), np.array([bid]),
        np.array([gpus], np.int64), np.array([share], np.int64), np.array([horizon]), np.zeros(1, np.int64),
        np.zeros(1, np.int64), np.ones((1, C), np.bool_), speed[None, :],
    )  # fmt: skip
    unread = np.zeros(C, np.int64)  # what only the spill reads of a class
    classes = kernels.Classes(
        np.arange(C), np.arange(C + 1), cls["count"], unread, unread, cls["whole"], cls["partial_min"], unread,
        unread, unread, cls["cpu_mean"], cls["mem_mean"], cls["price_gpu"], cls["price_cpu"], cls["price_gpu"],
        cls["price_cpu"], cls["reliability"],
    )  # fmt: skip
    pricing = kernels.Pricing(4.0, 0.1, flow.MAX_ARC_COST, _COST_SCALE)
    n = kernels.plan_arcs(kinds, classes, pricing, MIN_ARCS_PER_KIND, MAX_ARCS_PER_KIND, kernels.Arcs(*arcs))
    assert n >= MIN_ARCS_PER_KIND
    kind, node, cap, cost = (a[:n] for a in arcs)
    cand = node if gpus else node - C
    assert (kind == 0).all() and len(set(cand.tolist())) == n
    # arc_cost over every candidate class at once: the horizon's scale is the most reliable of them
    ok = _candidates(cls, gpus, share, cpu, mem, bid)
    expected = arc_cost(
        _kind(gpus, share, horizon),
        gpus * cls["price_gpu"][ok] + cpu / 1000.0 * cls["price_cpu"][ok]
        if bid == np.inf
        else np.zeros(len(ok)),
        gpus * 4.0 + cpu / 1000.0 * 0.1,
        speed[ok],
        cls["reliability"][ok],
        cls["whole"][ok],
        cls["partial_min"][ok],
    )
    by_class = dict(zip(ok.tolist(), expected.tolist(), strict=True))
    assert cost.tolist() == [by_class[c] for c in cand.tolist()]
    assert len(ok) > MIN_ARCS_PER_KIND and (np.diff(cost) >= 0).all()  # cheapest first
    assert cost.tolist() == sorted(by_class.values())[:n]  # the kind's cheapest classes
    assert (cap >= 1).all() and (cap <= 100).all()


def _candidates(cls: dict, gpus: int, share: int, cpu: float, mem: float, bid: float) -> np.ndarray:
    """The classes that could hold one task (the rule `_plan` documents)."""
    per = np.minimum((cls["cpu_mean"] / cpu).astype(np.int64), (cls["mem_mean"] / mem).astype(np.int64))
    if gpus and share and gpus == 1:
        per = np.minimum(per, cls["whole"] * (1000 // share) + cls["partial_min"] // share)
    elif gpus and share:
        per = np.minimum(per, (cls["whole"] + (cls["partial_min"] >= share)) // gpus)
    elif gpus:
        per = np.minimum(per, cls["whole"] // gpus)
    ok = per > 0
    if bid < np.inf:
        ok &= gpus * cls["price_gpu"] + cpu / 1000.0 * cls["price_cpu"] <= bid + 1e-9
    return np.flatnonzero(ok)


@pytest.mark.parametrize(("count", "share"), [(1, 0), (2, 0), (1, 250), (3, 400)])
def test_the_compiled_gpu_choice_is_choose_gpus(count: int, share: int) -> None:
    rng = np.random.default_rng(count * 7 + share)
    for _ in range(300):
        row = rng.choice([-1, 0, 100, 250, 600, 750, 1000], 8).astype(np.int64)
        models = rng.integers(-1, 3, 8)
        model_ok = np.array([[True, False, True, False]])  # the last slot: no GPU (-1)
        masked = bool(rng.integers(0, 2))
        mask = [bool(m >= 0 and model_ok[0, m]) for m in models.tolist()] if masked else None
        expected = row.tolist()
        want = choose_gpus(expected, mask, count, share)
        out = np.empty(8, np.int64)
        ask = kernels.GpuAsk(model_ok, 0, masked, 0, count, share)
        got = kernels._choose(row, ask, models, np.zeros(8, np.int64), out)
        assert got == (want is not None)
        if got:
            assert sorted(out[:count].tolist()) == sorted(want)
        assert row.tolist() == expected


def test_node_classes_order_members_by_price_ranks_as_by_the_prices() -> None:
    """Node classes rank every node's price of reliable work once a round (`NodeTable.price_ranks`) and order
    members by those ranks: the prices must be bit for bit the ones `node_features` gives the rows it is asked
    about, and the classes the same as when the prices themselves are sorted."""
    from ceti.cli.bench import synthetic_snapshot
    from ceti.fabric import classes
    from ceti.fabric.packing import Free

    snap = synthetic_snapshot(3000, 10, 4)
    t = classes.NodeTable(snap.nodes)
    free = Free(t, snap.running)
    cpu, mem, disk, gpu = free.arrays()
    rows = np.flatnonzero(np.arange(t.n) % 3 != 0)  # a subset still holding the dearest node or not
    for sub in (rows, np.arange(t.n)):
        *_, eff, top_pg, top_pc = kernels.node_features(
            sub, cpu, mem, gpu, t.gpu_type, t.region, t.reliability, t.price_gpu, t.price_cpu,
            np.asarray(classes.FAILURE_EDGES, np.float64), True, np.asarray(classes.CPU_EDGES_MILLI, np.int64),
            np.asarray(classes.MEMORY_EDGES_MIB, np.int64), len(t.region_names), classes.PARTIAL_GPU_BUCKET_MILLI,
        )  # fmt: skip
        every = kernels.reliable_prices(t.price_gpu, t.price_cpu, t.reliability, top_pg, top_pc)
        assert np.array_equal(every[sub], eff)
        rank, _ = t.price_ranks(top_pg, top_pc)
        assert np.array_equal(np.sign(np.subtract.outer(rank[sub][:300], rank[sub][:300])),
                              np.sign(np.subtract.outer(eff[:300], eff[:300])))  # fmt: skip
    ranked = classes.node_classes(t, cpu, mem, disk, gpu, by_reliability=True)
    t.price_ranks = lambda top_pg, top_pc: None  # type: ignore[method-assign]  # sort the prices themselves
    plain = classes.node_classes(t, cpu, mem, disk, gpu, by_reliability=True)
    assert np.array_equal(ranked.rows, plain.rows) and np.array_equal(ranked.bounds, plain.bounds)
