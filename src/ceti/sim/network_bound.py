"""An upper bound on the value any scheduler could capture in a network simulation: an LP relaxation (GLOP).

Time is cut into one-hour buckets. The LP knows exactly when every node is up (the same draw the simulator
replays) and every developer job's arrival, work and bid, and may split work freely: across buckets, GPU
models, nodes and fractions of GPUs. It drops what only makes real schedules worse: CPU and memory, regions,
gangs, asks (a job may use any GPU at no price), packing onto concrete GPUs, and work lost to failures or
pre-emption. So every schedule the simulator can produce is a feasible point of the LP, and the LP's optimum
bounds the value captured from above.

Variables:
- `X[g, b]`: GPU-hours of developer group `g` served in bucket `b`. A group is the jobs that arrive in one
  bucket with the same value per GPU-hour, rounded *up* to a 2% grid (merging jobs only loosens the bound,
  and rounding up keeps it a bound). Per bucket, a group can use at most its GPUs x the bucket's length (from
  arrival on); in total, at most its work.
- `Y[n, m, b]`: GPU-hours of network `n` on GPU model `m` in bucket `b`, at the network's revenue for `m`; per
  bucket a network uses at most its capacity.

Capacity: per bucket, developer and network work together use at most the GPU-hours the fleet was up; network
work on model `m` at most the GPU-hours of `m` that were up. Developer work may use any model, so these two
families of constraints are exact for it (a single-commodity transport).
"""

from __future__ import annotations

import math

import numpy as np

from ceti.sim.network_world import NETWORK_REVENUE_PER_GPU_HOUR, NetworkSimError, World

BUCKET_S = 3600.0
VALUE_GRID = 1.02


def available_gpu_hours(world: World, bucket_s: float = BUCKET_S) -> tuple[list[str], np.ndarray]:
    """GPU-hours each GPU model is up in each bucket: (models, array [model, bucket])."""
    models = world.models
    nb = max(1, math.ceil(world.horizon_s / bucket_s))
    avail = np.zeros((len(models), nb))
    mi = {m: i for i, m in enumerate(models)}
    for node in world.nodes:
        for a, b in node.up:
            a, b = max(a, 0.0), min(b, world.horizon_s)
            k = int(a // bucket_s)
            while a < b and k < nb:
                end = min(b, (k + 1) * bucket_s)
                avail[mi[node.model], k] += (end - a) / 3600 * node.gpus
                a = end
                k += 1
    return models, avail


def upper_bound(world: World, *, network_demand: bool = True, bucket_s: float = BUCKET_S) -> float:
    """The LP optimum, in USD over the whole horizon."""
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:  # pragma: no cover - OR-Tools ships GLOP
        raise NetworkSimError("the GLOP LP solver is not available in this OR-Tools build")
    models, avail = available_gpu_hours(world, bucket_s)
    nb = avail.shape[1]
    horizon = world.horizon_s
    # developer groups: (arrival bucket, value grid step) -> [work GPU-h, width GPUs, first-bucket GPU-h]
    groups: dict[tuple[int, int], list[float]] = {}
    for j in world.jobs:
        if j.arrival_s >= horizon:
            continue
        b0 = int(j.arrival_s // bucket_s)
        v = j.value_per_gpu_hour
        step = math.ceil(math.log(v) / math.log(VALUE_GRID) - 1e-9) if v > 0 else -10_000
        g = groups.setdefault((b0, step), [0.0, 0.0, 0.0])
        g[0] += j.gpus * j.run_s / 3600
        g[1] += j.gpus
        g[2] += j.gpus * (min((b0 + 1) * bucket_s, horizon) - j.arrival_s) / 3600
    used_terms: list[list] = [[] for _ in range(nb)]
    objective = []
    for (b0, step), (work, width, first) in sorted(groups.items()):
        value = VALUE_GRID**step
        xs = []
        for b in range(b0, nb):
            length = (min((b + 1) * bucket_s, horizon) - b * bucket_s) / 3600
            ub = first if b == b0 else width * length
            x = solver.NumVar(0.0, max(ub, 0.0), "")
            xs.append(x)
            used_terms[b].append(x)
            objective.append(value * x)
        solver.Add(solver.Sum(xs) <= work)
    if network_demand:
        for b in range(nb):
            length = (min((b + 1) * bucket_s, horizon) - b * bucket_s) / 3600
            per_model: list[list] = [[] for _ in models]
            for name, rev in sorted(NETWORK_REVENUE_PER_GPU_HOUR.items()):
                ys = []
                for i, m in enumerate(models):
                    if m not in rev or avail[i, b] <= 0:
                        continue
                    y = solver.NumVar(0.0, float(avail[i, b]), "")
                    ys.append(y)
                    per_model[i].append(y)
                    used_terms[b].append(y)
                    objective.append(rev[m] * y)
                if ys:
                    solver.Add(solver.Sum(ys) <= world.network_capacity_gpus.get(name, 0) * length)
            for i in range(len(models)):
                if len(per_model[i]) > 1:
                    solver.Add(solver.Sum(per_model[i]) <= float(avail[i, b]))
    for b in range(nb):
        if used_terms[b]:
            solver.Add(solver.Sum(used_terms[b]) <= float(avail[:, b].sum()))
    solver.Maximize(solver.Sum(objective))
    status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:  # pragma: no cover - the LP is bounded and feasible (all zeros)
        raise NetworkSimError(f"the LP bound did not solve (status {status})")
    return float(solver.Objective().Value())
