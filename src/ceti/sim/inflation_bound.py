"""How much GPU any placement could allocate in the workload-inflation experiment: offline bounds.

The online policies see pods one at a time. Offline, with every pod that has arrived by the 100% reading
known in advance, the most GPU milli a placement can allocate is a bin-packing optimum under the same
rules as `ClusterState.allocate`: CPU and memory per node, the pod's GPU model constraint, at most 1000
milli per GPU, a multi-GPU pod on whole GPUs of one node, a share on part of one GPU. Bounds:

- `solve_offline`: that optimum as a CP-SAT model (OR-Tools), exact but only tractable on sub-clusters of
  about a hundred nodes. It returns the best placement found (a lower bound on the optimum, checked by
  replaying it through `ClusterState.allocate`) and the solver's proven upper bound.
- `relaxation_bound`: the smaller of two linear relaxations for the full cluster (GLOP), each an upper bound
  because every integer placement is one of its feasible points:
  - `typed_relaxation`: identical pods form classes and identical nodes form types; the LP may split pods
    over node types and ignores which node of a type and which GPU of a node a pod takes, but keeps per
    type: CPU, memory, models, and for the GPUs a family of valid per-GPU inequalities (dual-feasible
    functions): for every GPU, sum f(milli of what it holds) <= 1000 holds for each f below, so it holds
    summed over the type's GPUs. These say, e.g., that a GPU holding an 810-milli share has only 190 milli
    left for pods of at most 190 milli, and that no GPU holds two shares above 500.
  - `packing_bound`: a configuration LP over GPU patterns (every multiset of share sizes that fits one GPU),
    exact about which leftovers the arrived shares can fill, blind to CPU, memory, models and nodes.
  With `min_placed`, both bound only the placements that place at least so many shares of given sizes (as
  many large shares as an online policy placed: such a policy never leaves a pod out that fits).

Sub-instances (`sub_instance`): a stratified sample of the nodes (by node type, randomised rounding per
type) and the same share of the experiment's arrival sequence (a random subset of positions, order kept),
cut at the last arrival whose arrived GPU request is at most 100% of the sub-cluster's capacity. The online
policies replay exactly that sequence with the experiment's code (`make_policy`, `place`, `allocate`, the
same per-seed generator), the workload learnt from the whole trace file as in the experiment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ceti.fabric.placement.policies import Placement
from ceti.fabric.placement.registry import make_policy
from ceti.fabric.placement.state import WHOLE_GPU_MILLI, ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload, share_patterns
from ceti.sim.inflation import InflationSetup, arrival_order, cluster_from_nodes, pod_requests
from ceti.sim.trace import TraceNode, TracePod


class BoundError(ValueError):
    """An instance the bound cannot be computed for (bad fraction, no GPUs, a non-empty cluster)."""


# --- pod classes and node types --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodClass:
    pod: PodRequest  # a representative
    members: tuple[int, ...]  # indices into the request list

    @property
    def n(self) -> int:
        return len(self.members)


def pod_classes(requests: Sequence[PodRequest], n_models: int) -> list[PodClass]:
    """Identical requests (CPU, memory, GPU count, GPU milli, accepted models) grouped, first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(requests):
        mask = (
            tuple(bool(x) for x in p.model_ok)
            if (p.gpu_count and p.model_ok is not None)
            else (True,) * n_models
        )
        key = (p.cpu_milli, p.memory_mib, p.gpu_count, p.gpu_milli if p.gpu_count else 0, mask)
        groups.setdefault(key, []).append(i)
    return [PodClass(requests[m[0]], tuple(m)) for m in groups.values()]


def _check_empty(state: ClusterState) -> None:
    full = np.zeros_like(state.gpu_free)
    for k in range(state.gpu_free.shape[1]):
        full[:, k] = np.where(state.gpu_count > k, WHOLE_GPU_MILLI, 0)
    if (
        not np.array_equal(state.gpu_free, full)
        or not np.array_equal(state.cpu_free, state.cpu_capacity)
        or not np.array_equal(state.memory_free, state.memory_capacity)
    ):
        raise BoundError("the offline bound starts from an empty cluster (use state.copy_empty())")


def fits_empty(state: ClusterState, pod: PodRequest) -> np.ndarray:
    """Nodes that could hold `pod` if they were empty."""
    ok = (state.cpu_capacity >= pod.cpu_milli) & (state.memory_capacity >= pod.memory_mib)
    if pod.gpu_count > 0:
        if pod.model_ok is not None:
            ok &= pod.model_ok[state.model_idx]
        ok &= state.gpu_count >= pod.gpu_count
    return ok


# --- per-GPU valid inequalities (dual-feasible functions) ------------------------------------------------


def _dff_values(sizes: Sequence[int]) -> list[dict[int, float]]:
    """Functions f on the share sizes (and 1000) with sum f(x) <= 1000 for any set of sizes that fits one
    GPU. f(1000) = 1000 in all of them: a GPU given whole holds nothing else."""
    sizes = sorted({int(s) for s in sizes if 0 < s < WHOLE_GPU_MILLI})
    out: list[dict[int, float]] = [{s: float(s) for s in sizes}]  # plain milli
    eps: set[int] = set()
    for s in sizes:
        for e in (s, s + 1, WHOLE_GPU_MILLI - s, WHOLE_GPU_MILLI - s + 1):
            if 0 < e <= WHOLE_GPU_MILLI // 2:
                eps.add(e)
    for e in sorted(eps):
        # a size above 1000 - e leaves room only for sizes below e: count it whole, drop those below e
        f = {}
        for s in sizes:
            f[s] = float(WHOLE_GPU_MILLI) if s > WHOLE_GPU_MILLI - e else (0.0 if s < e else float(s))
        out.append(f)
    for k in range(1, 6):
        # at most k sizes above 1000 / (k + 1) on one GPU
        out.append({s: (WHOLE_GPU_MILLI / k if s * (k + 1) > WHOLE_GPU_MILLI else 0.0) for s in sizes})
    for f in out:
        f[WHOLE_GPU_MILLI] = float(WHOLE_GPU_MILLI)
    return out


# --- the linear relaxation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelaxationResult:
    upper_milli: float  # no placement allocates more GPU milli: the smaller of the two below
    pods: int
    classes: int
    node_types: int
    seconds: float
    typed_milli: float = math.inf  # the per-node-type LP (CPU, memory, models, valid per-GPU inequalities)
    packing_milli: float = math.inf  # the GPU-packing LP (exact per-GPU patterns, nothing else)


def relaxation_bound(
    state: ClusterState, requests: Sequence[PodRequest], min_placed: Mapping[int, int] | None = None
) -> RelaxationResult:
    """Upper bound on the GPU milli any placement of `requests` on the empty `state` allocates: the smaller
    of two LP relaxations, `typed_relaxation` (CPU, memory and models per node type) and `packing_bound`
    (how shares can share one GPU, nothing else). `min_placed` as in `typed_relaxation`."""
    typed = typed_relaxation(state, requests, min_placed)
    packing = packing_bound(int(state.gpu_count.sum()), requests, min_placed)
    return RelaxationResult(
        min(typed.upper_milli, packing),
        typed.pods,
        typed.classes,
        typed.node_types,
        typed.seconds,
        typed.upper_milli,
        packing,
    )


def packing_bound(
    total_gpus: int, requests: Sequence[PodRequest], min_placed: Mapping[int, int] | None = None
) -> float:
    """Upper bound on the GPU milli placed, from GPU packing alone (a configuration LP).

    Each GPU is empty, whole for a whole-GPU pod, or holds a multiset of shares that fits; the LP chooses
    how many GPUs of each pattern, within the GPUs there are and the shares of each size that arrived.
    Multi-GPU pods count as that many whole GPUs (on any nodes); CPU, memory and models are dropped. Every
    placement gives a feasible point, so the optimum bounds it; it sees exactly which leftovers no arrived
    share can fill, which the per-type LP only approximates."""
    from ortools.linear_solver import pywraplp

    supply: dict[int, int] = {}
    whole: dict[int, int] = {}
    for p in requests:
        if p.is_share:
            supply[p.gpu_milli] = supply.get(p.gpu_milli, 0) + 1
        elif p.gpu_count:
            whole[p.gpu_count] = whole.get(p.gpu_count, 0) + 1
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover
        raise BoundError("OR-Tools GLOP is not available")
    objective = solver.Objective()
    gpus = solver.Constraint(-solver.infinity(), float(total_gpus))
    for k, n in whole.items():
        v = solver.NumVar(0.0, float(n), f"whole{k}")
        gpus.SetCoefficient(v, float(k))
        objective.SetCoefficient(v, float(k * WHOLE_GPU_MILLI))
    rows = {s: solver.Constraint(float((min_placed or {}).get(s, 0)), float(n)) for s, n in supply.items()}
    add_pattern_columns(solver, gpus, rows, objective)
    objective.SetMaximization()
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        raise BoundError(f"the packing LP did not solve (status {status}); min_placed asks too much?")
    return upper_of(objective)


def add_pattern_columns(  # type: ignore[no-untyped-def]
    solver, gpus, rows: Mapping[int, object], objective=None
) -> None:
    """A column per pattern of one GPU's shares (every multiset of the sizes in `rows` that fits): it takes
    one GPU of the `gpus` row and its count of each size in that size's row; with `objective`, it is worth
    the milli it holds."""
    for pat in share_patterns(list(rows)):
        v = solver.NumVar(0.0, solver.infinity(), "")
        gpus.SetCoefficient(v, 1.0)
        if objective is not None:
            objective.SetCoefficient(v, float(sum(s * c for s, c in pat.items())))
        for s, c in pat.items():
            rows[s].SetCoefficient(v, float(c))


def upper_of(objective) -> float:  # type: ignore[no-untyped-def]
    """A maximising LP's optimum as a bound: GLOP works in floating point, so it is rounded up a little."""
    return float(objective.Value()) * (1 + 1e-9) + 1e-6


def typed_relaxation(
    state: ClusterState, requests: Sequence[PodRequest], min_placed: Mapping[int, int] | None = None
) -> RelaxationResult:
    """Upper bound on the GPU milli any placement of `requests` on the empty `state` allocates (an LP).

    `min_placed` {share milli: count} bounds only the placements that place at least that many shares of
    each size, e.g. as many 810-milli shares as an online policy placed: an online policy places every pod
    that fits somewhere, so the offline optimum's way of leaving large shares out is not open to it."""
    from ortools.linear_solver import pywraplp

    _check_empty(state)
    t0 = time.perf_counter()
    classes = [c for c in pod_classes(requests, len(state.models)) if c.pod.gpu_count > 0]
    types: dict[tuple[int, int, int, int], list[int]] = {}
    for i in range(state.size):
        if state.gpu_count[i] == 0:
            continue
        key = (
            int(state.model_idx[i]),
            int(state.gpu_count[i]),
            int(state.cpu_capacity[i]),
            int(state.memory_capacity[i]),
        )
        types.setdefault(key, []).append(i)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
        raise BoundError("OR-Tools GLOP is not available")
    dffs = _dff_values([c.pod.gpu_milli for c in classes if c.pod.is_share])
    by_class: dict[int, list] = {j: [] for j in range(len(classes))}
    objective = solver.Objective()
    for (model, gpus, cpu, mem), members in types.items():
        n = len(members)
        node = members[0]
        cpu_row = solver.Constraint(-solver.infinity(), float(n * cpu))
        mem_row = solver.Constraint(-solver.infinity(), float(n * mem))
        gpu_rows = [solver.Constraint(-solver.infinity(), float(n * gpus * WHOLE_GPU_MILLI)) for _ in dffs]
        # whole-GPU pods of k GPUs: at most floor(gpus / k) per node is implied by the GPU rows only
        # fractionally; keep the exact per-node count for each k as well
        for j, c in enumerate(classes):
            p = c.pod
            if not fits_empty(state, p)[node]:
                continue
            v = solver.NumVar(0.0, float(c.n), f"v{j}_{model}_{gpus}_{cpu}_{mem}")
            by_class[j].append(v)
            objective.SetCoefficient(v, float(p.gpu_milli_total))
            cpu_row.SetCoefficient(v, float(p.cpu_milli))
            mem_row.SetCoefficient(v, float(p.memory_mib))
            size = WHOLE_GPU_MILLI if not p.is_share else int(p.gpu_milli)
            for row, f in zip(gpu_rows, dffs, strict=True):
                row.SetCoefficient(v, f[size] * (p.gpu_count if not p.is_share else 1))
    for j, c in enumerate(classes):
        if by_class[j]:
            row = solver.Constraint(0.0, float(c.n))
            for v in by_class[j]:
                row.SetCoefficient(v, 1.0)
    for milli, count in (min_placed or {}).items():
        row = solver.Constraint(float(count), solver.infinity())
        for j, c in enumerate(classes):
            if c.pod.is_share and c.pod.gpu_milli == milli:
                for v in by_class[j]:
                    row.SetCoefficient(v, 1.0)
    objective.SetMaximization()
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        raise BoundError(f"the relaxation did not solve (status {status}); min_placed asks too much?")
    upper = upper_of(objective)
    return RelaxationResult(upper, len(requests), len(classes), len(types), time.perf_counter() - t0)


def shares_placed(
    requests: Sequence[PodRequest], placements: Sequence[Placement | None], *, above_milli: int = 0
) -> dict[int, int]:
    """{share milli: how many were placed} for the shares above `above_milli`."""
    out: dict[int, int] = {}
    for p, pl in zip(requests, placements, strict=True):
        if pl is not None and p.is_share and p.gpu_milli > above_milli:
            out[p.gpu_milli] = out.get(p.gpu_milli, 0) + 1
    return out


def large_shares_placed(
    requests: Sequence[PodRequest], placements: Sequence[Placement | None]
) -> dict[int, int]:
    """{share milli: how many were placed} for the shares above half a GPU (each needs a GPU of its own)."""
    return shares_placed(requests, placements, above_milli=WHOLE_GPU_MILLI // 2)


# --- the exact model (CP-SAT) ----------------------------------------------------------------------------


@dataclass(slots=True)
class OfflineResult:
    best_milli: int  # GPU milli of the best placement found
    upper_milli: int  # the solver's proven bound (>= the optimum)
    optimal: bool
    seconds: float
    placements: list[Placement | None] = field(default_factory=list)  # per request, for the best placement


def _gpu_order(loads: Sequence[int], whole: Sequence[bool]) -> list[int]:
    """GPU indices sorted as the model's symmetry breaking wants them: whole GPUs first, then by load."""
    return sorted(range(len(loads)), key=lambda g: (not whole[g], -loads[g], g))


def solve_offline(
    state: ClusterState,
    requests: Sequence[PodRequest],
    *,
    time_limit: float = 10.0,
    workers: int = 1,
    hint: Sequence[Placement | None] | None = None,
    seed: int = 0,
) -> OfflineResult:
    """The most GPU milli any placement of `requests` on the empty `state` allocates, by CP-SAT.

    Variables: per (pod class, node) how many of the class the node holds; per (share size, node, GPU) how
    many shares of that size the GPU holds; per (node, GPU) whether a whole-GPU pod holds it. GPUs of a node
    are interchangeable, so they are ordered: whole GPUs first, then by decreasing load. `hint` (one online
    policy's placements) seeds the search, so the best found is never below it.
    """
    from ortools.sat.python import cp_model

    _check_empty(state)
    if time_limit <= 0:
        raise BoundError("time_limit must be positive")
    t0 = time.perf_counter()
    # CPU-only pods allocate no GPU: leaving them out changes no placement's GPU milli
    classes = [c for c in pod_classes(requests, len(state.models)) if c.pod.gpu_count > 0]
    m = cp_model.CpModel()
    x: dict[tuple[int, int], object] = {}  # (class, node) -> count
    on_node: dict[int, list[int]] = {}
    for j, c in enumerate(classes):
        p = c.pod
        ok = np.flatnonzero(fits_empty(state, p))
        for i in ok:
            i = int(i)
            ub = c.n
            if p.cpu_milli > 0:
                ub = min(ub, int(state.cpu_capacity[i] // p.cpu_milli))
            if p.memory_mib > 0:
                ub = min(ub, int(state.memory_capacity[i] // p.memory_mib))
            if p.gpu_count and not p.is_share:
                ub = min(ub, int(state.gpu_count[i] // p.gpu_count))
            if p.is_share:
                ub = min(ub, int(state.gpu_count[i]) * (WHOLE_GPU_MILLI // p.gpu_milli))
            if ub <= 0:
                continue
            x[j, i] = m.NewIntVar(0, ub, f"x{j}_{i}")
            on_node.setdefault(i, []).append(j)
    for j, c in enumerate(classes):
        vs = [x[j, i] for i in range(state.size) if (j, i) in x]
        if vs:
            m.Add(sum(vs) <= c.n)
    share_sizes = sorted({c.pod.gpu_milli for c in classes if c.pod.is_share})
    dffs = _dff_values(share_sizes)
    z: dict[tuple[int, int, int], object] = {}
    w: dict[tuple[int, int], object] = {}
    for i, js in on_node.items():
        m.Add(sum(classes[j].pod.cpu_milli * x[j, i] for j in js) <= int(state.cpu_capacity[i]))
        m.Add(sum(classes[j].pod.memory_mib * x[j, i] for j in js) <= int(state.memory_capacity[i]))
        g_n = int(state.gpu_count[i])
        if g_n == 0:
            continue
        whole_js = [j for j in js if classes[j].pod.gpu_count and not classes[j].pod.is_share]
        share_js = [j for j in js if classes[j].pod.is_share]
        loads = []
        for g in range(g_n):
            terms = []
            if whole_js:
                w[i, g] = m.NewBoolVar(f"w{i}_{g}")
                terms.append(WHOLE_GPU_MILLI * w[i, g])
            for s in share_sizes:
                if any(classes[j].pod.gpu_milli == s for j in share_js):
                    z[s, i, g] = m.NewIntVar(0, WHOLE_GPU_MILLI // s, f"z{s}_{i}_{g}")
                    terms.append(s * z[s, i, g])
            load = sum(terms) if terms else 0
            if terms:
                m.Add(load <= WHOLE_GPU_MILLI)
            loads.append(load)
        # redundant per-node sums of the per-GPU valid inequalities: they give the solver's LP the
        # relaxation's strength (without them its bound is just the arrived GPU milli)
        node_sizes = [s for s in share_sizes if (s, i, 0) in z]
        for f in dffs:
            terms = [math.floor(f[s] * 1000) * z[s, i, g] for s in node_sizes for g in range(g_n)]
            if whole_js:
                terms += [WHOLE_GPU_MILLI * 1000 * w[i, g] for g in range(g_n)]
            if terms and any(f[s] != s for s in node_sizes):
                m.Add(sum(terms) <= WHOLE_GPU_MILLI * 1000 * g_n)
        if whole_js:
            m.Add(
                sum(w[i, g] for g in range(g_n)) == sum(classes[j].pod.gpu_count * x[j, i] for j in whole_js)
            )
            for g in range(g_n - 1):
                m.Add(w[i, g] >= w[i, g + 1])
        for s in share_sizes:
            js_s = [j for j in share_js if classes[j].pod.gpu_milli == s]
            if js_s:
                m.Add(sum(z[s, i, g] for g in range(g_n)) == sum(x[j, i] for j in js_s))
        if share_js or whole_js:
            for g in range(g_n - 1):
                m.Add(loads[g] >= loads[g + 1])
    m.Maximize(sum(classes[j].pod.gpu_milli_total * v for (j, _), v in x.items()))
    if hint is not None:
        _add_hint(m, state, requests, classes, hint, x, z, w, share_sizes)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = max(1, int(workers))
    solver.parameters.random_seed = int(seed)
    status = solver.Solve(m)
    # everything placed is the trivial bound; the solver's own is only read when it reports a solution
    upper = sum(c.pod.gpu_milli_total * c.n for c in classes)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        upper = min(upper, math.floor(solver.BestObjectiveBound() + 1e-6))
    else:
        # no solution within the time limit (one worker may not even adopt the hint): the hint is the best known
        if hint is None:
            raise BoundError(f"CP-SAT found no placement in {time_limit} s ({solver.StatusName(status)})")
        placements = [pl if requests[r].gpu_count else None for r, pl in enumerate(hint)]
        best = sum(requests[r].gpu_milli_total for r, pl in enumerate(placements) if pl is not None)
        return OfflineResult(best, max(upper, best), False, time.perf_counter() - t0, placements)
    best = round(solver.ObjectiveValue())
    placements = _extract(solver, state, requests, classes, x, z, w, share_sizes)
    if hint is not None:
        # several workers do not always keep the hint as their incumbent: never report less than it
        hinted = [pl if requests[r].gpu_count else None for r, pl in enumerate(hint)]
        hinted_milli = sum(requests[r].gpu_milli_total for r, pl in enumerate(hinted) if pl is not None)
        if hinted_milli > best:
            best, placements = hinted_milli, hinted
    return OfflineResult(
        best, max(upper, best), status == cp_model.OPTIMAL, time.perf_counter() - t0, placements
    )


def _add_hint(m, state, requests, classes, hint, x, z, w, share_sizes) -> None:  # type: ignore[no-untyped-def]
    """Turn one placement per request into values of the model's variables (GPUs in the model's order)."""
    if len(hint) != len(requests):
        raise BoundError("hint must give one placement (or None) per request")
    cls_of = {i: j for j, c in enumerate(classes) for i in c.members}
    hint = [pl if r in cls_of else None for r, pl in enumerate(hint)]
    counts: dict[tuple[int, int], int] = {}
    gpu_load = np.zeros_like(state.gpu_free)
    gpu_whole = np.zeros(state.gpu_free.shape, dtype=bool)
    gpu_sizes: dict[tuple[int, int], list[int]] = {}
    for r, pl in enumerate(hint):
        if pl is None:
            continue
        node, gpus = pl
        p = requests[r]
        counts[cls_of[r], node] = counts.get((cls_of[r], node), 0) + 1
        for g in gpus:
            gpu_load[node, g] += p.gpu_milli
            if p.is_share:
                gpu_sizes.setdefault((node, g), []).append(p.gpu_milli)
            else:
                gpu_whole[node, g] = True
    for key, v in x.items():
        m.AddHint(v, counts.get(key, 0))
    for i in range(state.size):
        g_n = int(state.gpu_count[i])
        order = _gpu_order(list(gpu_load[i, :g_n]), list(gpu_whole[i, :g_n]))
        for pos, g in enumerate(order):
            if (i, pos) in w:
                m.AddHint(w[i, pos], int(gpu_whole[i, g]))
            held = gpu_sizes.get((i, g), [])
            for s in share_sizes:
                if (s, i, pos) in z:
                    m.AddHint(z[s, i, pos], held.count(s))


def _extract(solver, state, requests, classes, x, z, w, share_sizes) -> list[Placement | None]:  # type: ignore[no-untyped-def]
    """The solver's best placement as (node, GPUs) per request (None: not placed)."""
    out: list[Placement | None] = [None] * len(requests)
    nodes: dict[int, list[tuple[int, int]]] = {}
    for (j, i), v in x.items():
        k = int(solver.Value(v))
        if k:
            nodes.setdefault(i, []).append((j, k))
    for i, items in nodes.items():
        g_n = int(state.gpu_count[i])
        whole_gpus = [g for g in range(g_n) if (i, g) in w and solver.Value(w[i, g])]
        slots: dict[int, list[int]] = {}  # share size -> GPU per copy
        for s in share_sizes:
            for g in range(g_n):
                if (s, i, g) in z:
                    slots.setdefault(s, []).extend([g] * int(solver.Value(z[s, i, g])))
        for j, k in items:
            c = classes[j]
            members = [r for r in c.members if out[r] is None][:k]
            for r in members:
                p = c.pod
                if p.gpu_count == 0:
                    out[r] = (i, ())
                elif p.is_share:
                    out[r] = (i, (slots[p.gpu_milli].pop(),))
                else:
                    take, whole_gpus = whole_gpus[: p.gpu_count], whole_gpus[p.gpu_count :]
                    out[r] = (i, tuple(take))
    return out


# --- sub-instances and the online replay -----------------------------------------------------------------


@dataclass(slots=True)
class BoundInstance:
    """Nodes and the pods arrived by the reading point, in arrival order."""

    nodes: list[TraceNode]
    pods: list[TracePod]
    cluster: ClusterState
    requests: list[PodRequest]

    @property
    def capacity_milli(self) -> int:
        return self.cluster.total_gpu_milli()

    @property
    def arrived_milli(self) -> int:
        return int(sum(p.gpu_milli_total for p in self.pods))


def sample_nodes(nodes: Sequence[TraceNode], fraction: float, rng: np.random.Generator) -> list[TraceNode]:
    """About `fraction` of the nodes of every type (model, GPUs, CPU, memory), rounded at random per type;
    at least one GPU node."""
    if not 0 < fraction <= 1:
        raise BoundError(f"fraction must be in (0, 1], not {fraction}")
    types: dict[tuple, list[int]] = {}
    for i, n in enumerate(nodes):
        types.setdefault((n.gpu_model, n.gpu_count, n.cpu_milli, n.memory_mib), []).append(i)
    keep: list[int] = []
    for key in sorted(types, key=str):
        members = types[key]
        want = len(members) * fraction
        k = int(want) + (1 if rng.random() < want - int(want) else 0)
        keep.extend(int(i) for i in rng.choice(members, size=k, replace=False))
    if not any(nodes[i].gpu_count for i in keep):
        gpu_nodes = [i for i, n in enumerate(nodes) if n.gpu_count]
        if not gpu_nodes:
            raise BoundError("no GPU node to sample")
        keep.append(int(rng.choice(gpu_nodes)))
    return [nodes[i] for i in sorted(keep)]


def arrived_prefix(
    order: Sequence[int], gpu_milli: np.ndarray, capacity_milli: int, percent: float
) -> list[int]:
    """The arrivals up to the last one whose arrived GPU request is at most `percent` of capacity."""
    limit = percent / 100 * capacity_milli
    out, arrived = [], 0
    for i in order:
        arrived += int(gpu_milli[i])
        if arrived > limit:
            break
        out.append(i)
    return out


def sub_instance(
    nodes: Sequence[TraceNode],
    pods: Sequence[TracePod],
    seed: int,
    fraction: float = 0.1,
    *,
    inflation: float = 1.3,
    percent: float = 100,
) -> BoundInstance:
    """A sampled sub-cluster and the same share of the experiment's arrival sequence for `seed`, cut at
    `percent` of the sub-cluster's capacity. fraction=1: the full cluster and the experiment's sequence."""
    if not pods:
        raise BoundError("no pods")
    gpu_milli = np.asarray([p.gpu_milli_total for p in pods], dtype=np.int64)
    full_capacity = sum(n.gpu_count for n in nodes) * WHOLE_GPU_MILLI
    if full_capacity == 0:
        raise BoundError("the cluster has no GPU")
    order = arrival_order(len(pods), gpu_milli, full_capacity, inflation, seed)
    if fraction >= 1:
        sub_nodes = list(nodes)
        sub_order = order
    else:
        rng = np.random.default_rng([seed, 11])
        sub_nodes = sample_nodes(nodes, fraction, rng)
        share = sum(n.gpu_count for n in sub_nodes) * WHOLE_GPU_MILLI / full_capacity
        keep = np.sort(rng.choice(len(order), size=max(1, round(len(order) * share)), replace=False))
        sub_order = [order[int(k)] for k in keep]
    cluster = cluster_from_nodes(sub_nodes)
    prefix = arrived_prefix(sub_order, gpu_milli, cluster.total_gpu_milli(), percent)
    sub_pods = [pods[i] for i in prefix]
    return BoundInstance(sub_nodes, sub_pods, cluster, pod_requests(cluster, sub_pods))


def replay_online(
    instance: BoundInstance, policy_name: str, workload: TargetWorkload | None, seed: int
) -> tuple[int, list[Placement | None]]:
    """The instance's pods arriving one at a time through `policy_name`, as `run_inflation` places them.
    Returns the allocated GPU milli and each pod's placement (None: it fit nowhere)."""
    state = instance.cluster.copy_empty()
    policy = make_policy(policy_name, workload)
    rng = np.random.default_rng([seed, 7])
    used = 0
    out: list[Placement | None] = []
    for pod in instance.requests:
        choice = policy.place(state, pod, rng)
        if choice is not None:
            state.allocate(choice[0], pod, choice[1])
            used += pod.gpu_milli_total
        out.append(choice)
    return used, out


@dataclass(slots=True)
class SeedBound:
    seed: int
    nodes: int
    gpus: int
    pods: int
    capacity_milli: int
    arrived_milli: int
    online_milli: dict[str, int]
    relaxation_milli: float
    offline: OfflineResult | None
    keep_policy: str | None = None  # the online policy whose large shares `keep_milli` places too
    keep_milli: float | None = None  # the relaxation, placing at least as many large shares as keep_policy
    # the same with at least as many shares of every size as keep_policy: the floor for packing the shares it
    # placed better (the large-share floor may still leave the small ones out, which it did not)
    keep_all_milli: float | None = None

    def unallocated(self, milli: float) -> float:
        return (self.capacity_milli - milli) / WHOLE_GPU_MILLI

    @property
    def upper_milli(self) -> float:
        """The tightest bound: the solver's, or the relaxation's if lower (both hold)."""
        ups = [self.relaxation_milli, float(self.arrived_milli)]
        if self.offline is not None:
            ups.append(float(self.offline.upper_milli))
        return min(ups)

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "seed": self.seed,
            "nodes": self.nodes,
            "gpus": self.gpus,
            "pods": self.pods,
            "arrived_gpus": self.arrived_milli / WHOLE_GPU_MILLI,
            "unallocated_lower_bound": round(self.unallocated(self.upper_milli), 3),
            "unallocated_relaxation": round(self.unallocated(self.relaxation_milli), 3),
            "unallocated_online": {k: self.unallocated(v) for k, v in self.online_milli.items()},
        }
        if self.keep_milli is not None:
            out["unallocated_relaxation_keeping_large_shares_of"] = {
                str(self.keep_policy): round(self.unallocated(self.keep_milli), 3)
            }
        if self.keep_all_milli is not None:
            out["unallocated_relaxation_keeping_shares_of"] = {
                str(self.keep_policy): round(self.unallocated(self.keep_all_milli), 3)
            }
        if self.offline is not None:
            out["unallocated_offline_best"] = self.unallocated(self.offline.best_milli)
            out["offline_optimal"] = self.offline.optimal
            out["offline_seconds"] = round(self.offline.seconds, 2)
        return out


def bound_seed(
    setup: InflationSetup,
    nodes: Sequence[TraceNode],
    seed: int,
    *,
    fraction: float = 0.1,
    policies: Sequence[str] = ("fgd", "fabric"),
    time_limit: float = 30.0,
    workers: int = 1,
    exact: bool = True,
) -> SeedBound:
    """Online policies, the relaxation, and (with `exact`) the CP-SAT optimum on one seed's sub-instance
    (fraction=1: the full cluster and the experiment's own arrivals). The CP-SAT search starts from the best
    online placement; the conditional relaxation keeps that policy's large shares placed."""
    inst = sub_instance(nodes, setup.pods, seed, fraction)
    online: dict[str, int] = {}
    best: tuple[int, str, list[Placement | None]] | None = None
    for name in policies:
        used, placed = replay_online(inst, name, setup.workload, seed)
        online[name] = used
        if best is None or used > best[0]:
            best = (used, name, placed)
    relax = relaxation_bound(inst.cluster, inst.requests)
    keep = keep_all = None
    if best is not None:
        keep = relaxation_bound(inst.cluster, inst.requests, large_shares_placed(inst.requests, best[2]))
        keep_all = relaxation_bound(inst.cluster, inst.requests, shares_placed(inst.requests, best[2]))
    offline = None
    if exact:
        offline = solve_offline(
            inst.cluster,
            inst.requests,
            time_limit=time_limit,
            workers=workers,
            hint=best[2] if best else None,
            seed=seed,
        )
    return SeedBound(
        seed=seed,
        nodes=inst.cluster.size,
        gpus=int(inst.cluster.gpu_count.sum()),
        pods=len(inst.pods),
        capacity_milli=inst.capacity_milli,
        arrived_milli=inst.arrived_milli,
        online_milli=online,
        relaxation_milli=relax.upper_milli,
        offline=offline,
        keep_policy=best[1] if best else None,
        keep_milli=keep.upper_milli if keep else None,
        keep_all_milli=keep_all.upper_milli if keep_all else None,
    )
