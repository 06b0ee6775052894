"""The least any policy that places every pod that fits can leave unallocated in the inflation experiment.

The experiment's rule is kube-scheduler's: an arriving pod is placed whenever some node can take it, and work
never leaves, so a node's free room only shrinks. Hence, if a pod `w` was placed, every pod `s` that arrived
before it and that `w` *covers* fitted when it arrived (on `w`'s node, in the room `w` took later) and was
placed too. `w` covers `s` when `s` asks no more CPU and no more memory, may use every GPU model `w` may, and
either `w` takes whole GPUs and `s` is a share or takes no more GPUs, or both are shares and `s` asks no more
milli.

`fit_rule_bound` is the packing LP of `inflation_bound.packing_bound` (GPUs given whole or filled with a
pattern of shares; no nodes, CPU or memory) with a variable per arrived pod and `x_w <= x_s` for every such
pair. Every run of a policy under the rule is a feasible point of it, so its optimum bounds what any such
policy allocates. The plain packing LP ("any placement") leaves about a fifth of the 810-milli shares out and
gives their GPUs to whole-GPU pods that arrive later; under the rule, a pod placed later forces every share it
covers before it, so that is no longer open.

`reading_floor` turns it into a floor under the experiment's own reading, the mean allocation over the
arrivals whose arrived share rounds to 100% (`inflation.RunResult.alloc_ratio_at`), from a few LP solves per
seed.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ceti.fabric.placement.state import WHOLE_GPU_MILLI, PodRequest
from ceti.sim.inflation import InflationSetup, RunResult, arrival_order, reading_band
from ceti.sim.inflation_bound import BoundError, add_pattern_columns, pod_classes, upper_of

# (CPU milli, memory MiB, GPU count, GPU milli per GPU, the GPU models it may use as indices)
Shape = tuple[int, int, int, int, frozenset[int]]


def cover_shape(pod: PodRequest, n_models: int) -> Shape:
    allowed = range(n_models) if pod.model_ok is None else np.flatnonzero(pod.model_ok).tolist()
    return (pod.cpu_milli, pod.memory_mib, pod.gpu_count, pod.gpu_milli, frozenset(allowed))


def covers(later: Shape, earlier: Shape) -> bool:
    """Whether a GPU pod of shape `later`, placed, proves that a pod of shape `earlier` that arrived before it
    fitted on arrival (see the module's docstring)."""
    cpu_w, mem_w, count_w, milli_w, models_w = later
    cpu_s, mem_s, count_s, milli_s, models_s = earlier
    if cpu_s > cpu_w or mem_s > mem_w or not models_w <= models_s or not count_w or not count_s:
        return False
    share_s = milli_s < WHOLE_GPU_MILLI
    if milli_w >= WHOLE_GPU_MILLI:  # w found count_w idle GPUs on one node
        return share_s or count_s <= count_w
    return share_s and milli_s <= milli_w  # w found one GPU with milli_w free


@dataclass(frozen=True, slots=True)
class FitRuleLP:
    upper_milli: float  # no policy under the rule allocates more GPU milli
    pods: int  # GPU pods in the LP
    implications: int  # x_w <= x_s rows
    seconds: float


def fit_rule_bound(total_gpus: int, requests: Sequence[PodRequest], n_models: int) -> FitRuleLP:
    """Upper bound on the GPU milli any policy that places every pod that fits allocates when `requests`
    arrive in this order on an empty cluster of `total_gpus` GPUs (`n_models`: the cluster's model count, for
    the masks of `PodRequest.model_ok`)."""
    from ortools.linear_solver import pywraplp

    t0 = time.perf_counter()
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        raise BoundError("OR-Tools GLOP is not available")
    objective = solver.Objective()
    gpus = solver.Constraint(-solver.infinity(), float(total_gpus))
    gpu_pods = [(i, p) for i, p in enumerate(requests) if p.gpu_count > 0]
    x: dict[int, object] = {}
    by_size: dict[int, list[int]] = {}
    for i, p in gpu_pods:
        v = x[i] = solver.NumVar(0.0, 1.0, "")
        objective.SetCoefficient(v, float(p.gpu_milli_total))
        if p.is_share:
            by_size.setdefault(p.gpu_milli, []).append(i)
        else:
            gpus.SetCoefficient(v, float(p.gpu_count))
    # the shares placed of each size fit in the patterns chosen
    rows = {}
    for size, members in by_size.items():
        row = rows[size] = solver.Constraint(0.0, solver.infinity())
        for i in members:
            row.SetCoefficient(x[i], -1.0)
    add_pattern_columns(solver, gpus, rows)
    # x_w <= x_s for each covered s before w: pods of one shape in a chain (each placed one forces the one
    # before it), and each pod to the latest earlier pod of every other shape it covers, unless that row
    # follows from another: when w covers c, c covers b and c's latest pod came after b's, x_w <= x_c <= x_b
    classes = pod_classes([p for _, p in gpu_pods], n_models)
    shapes = [cover_shape(c.pod, n_models) for c in classes]
    # shapes in a fixed order, not as first seen: the order the rows are written in moves the LP's last bits
    by_shape = sorted(range(len(shapes)), key=lambda k: (shapes[k][:4], sorted(shapes[k][4])))
    classes = [classes[k] for k in by_shape]
    shapes = [shapes[k] for k in by_shape]
    shape_at = np.empty(len(gpu_pods), np.int64)  # per GPU pod, its shape
    for k, c in enumerate(classes):
        shape_at[list(c.members)] = k
    cover = np.array([covers(a, b) for a in shapes for b in shapes], dtype=bool).reshape(
        len(shapes), len(shapes)
    )
    covered = [np.flatnonzero(cover[k]) for k in range(len(shapes))]
    within = [cover[np.ix_(c, c)] for c in covered]  # which of a shape's covered shapes cover which
    latest = np.full(len(shapes), -1, np.int64)  # per shape, its latest pod so far
    n_rows = 0
    for (i, _), a in zip(gpu_pods, shape_at.tolist(), strict=True):
        c = covered[a]
        last = latest[c]
        implied = (within[a] & (last[:, None] > last[None, :])).any(axis=0)
        for j in last[(last >= 0) & ~implied].tolist():
            row = solver.Constraint(0.0, solver.infinity())
            row.SetCoefficient(x[j], 1.0)
            row.SetCoefficient(x[i], -1.0)
            n_rows += 1
        latest[a] = i
    objective.SetMaximization()
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        raise BoundError(f"the fit-rule LP did not solve (status {status})")
    return FitRuleLP(upper_of(objective), len(gpu_pods), n_rows, time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class ReadingFloor:
    seed: int
    total_gpus: int
    band: tuple[int, int]  # arrivals (0-based, inclusive) whose arrived share rounds to the reading's percent
    checkpoints: tuple[tuple[int, float], ...]  # (arrival, the LP's bound on the GPU milli allocated by then)
    unallocated_at_cut: float  # the floor on unallocated GPUs after the last arrival at or below `percent`
    unallocated_reading: float  # the floor on the experiment's reading (`RunResult.unallocated_gpus_at`)
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "band_arrivals": list(self.band),
            "checkpoints": [{"arrival": a, "upper_milli": round(u, 1)} for a, u in self.checkpoints],
            "unallocated_floor_at_cut": round(self.unallocated_at_cut, 3),
            "unallocated_floor_reading": round(self.unallocated_reading, 3),
            "seconds": round(self.seconds, 1),
        }


def reading_floor(
    setup: InflationSetup,
    seed: int,
    *,
    percent: float = 100,
    checkpoints: int = 2,
    inflation: float = 1.3,
    progress: Callable[[], None] | None = None,
) -> ReadingFloor:
    """The least unallocated GPUs that any policy under the rule shows in the experiment's reading at
    `percent` for `seed`: the LP at `checkpoints` arrivals of the reading's band (its first and last, the
    last one at or below `percent`, the rest spread between), and for the arrivals between two of them the
    smaller of the later one's bound and the earlier one's plus what arrived since. Then the experiment's
    own reading of those bounds; its rounding only grows with the allocation, so the floor is exact.
    `progress`, when given, is called with no argument after each LP."""
    if checkpoints < 2:
        raise BoundError("checkpoints must be at least 2")
    t0 = time.perf_counter()
    cluster = setup.cluster
    total_gpus = int(cluster.gpu_count.sum())
    capacity = cluster.total_gpu_milli()
    if capacity == 0:
        raise BoundError("the cluster has no GPU")
    order = arrival_order(len(setup.pods), setup.gpu_milli, capacity, inflation, seed)
    arrived = np.cumsum(setup.gpu_milli[order])
    # the reading's fallback (arrivals within a point) depends on where a run stops; hold to the exact band
    band = np.flatnonzero(reading_band(arrived, total_gpus, percent, fallback=False))
    if not len(band):
        raise BoundError(
            f"no arrival's arrived share rounds to {percent}%: the cluster is too small for pods this big"
        )
    first, last = int(band[0]), int(band[-1])
    cut = int(np.searchsorted(arrived, percent / 100 * capacity, side="right")) - 1  # last at or below
    points = set(np.linspace(first, last, checkpoints).round().astype(int).tolist())  # first and last too
    if first <= cut <= last:
        points.add(cut)
    points_sorted = sorted(points)
    n_models = len(cluster.models)
    bounds: dict[int, float] = {}
    for c in points_sorted:
        bounds[c] = fit_rule_bound(
            total_gpus, [setup.requests[i] for i in order[: c + 1]], n_models
        ).upper_milli
        if progress is not None:
            progress()
    # per arrival of the band: the bound at the next checkpoint, or the previous one's plus what arrived since
    upper = arrived[: last + 1].astype(np.float64)
    for i in range(first, last + 1):
        k = bisect.bisect_left(points_sorted, i)
        nxt = points_sorted[k]
        best = bounds[nxt]
        if nxt != i and k > 0:
            prev = points_sorted[k - 1]
            best = min(best, bounds[prev] + float(arrived[i] - arrived[prev]))
        upper[i] = min(best, float(arrived[i]))
    floor = RunResult("fit-rule floor", seed, total_gpus, arrived[: last + 1], upper, 0, 0)
    at_cut = total_gpus - bounds[cut] / WHOLE_GPU_MILLI if cut in bounds else float("nan")
    return ReadingFloor(
        seed,
        total_gpus,
        (first, last),
        tuple((c, bounds[c]) for c in points_sorted),
        at_cut,
        floor.unallocated_gpus_at(percent),
        time.perf_counter() - t0,
    )
