r"""Min-cost flow between job kinds and node classes (OR-Tools `SimpleMinCostFlow`, C++).

    source --(units of kind j)--> kind j --(cap[j, c], cost[j, c])--> capacity node c --(room[c])--> sink
                                      \----------------------(units, unplaced cost)------------------/

A unit is a slice of the resource the kind competes for: a tenth of a GPU for GPU work (a task of two whole
GPUs is 20 units, a 30 % share is 3), a CPU core for CPU-only work. Each node class has one capacity node per
resource, holding its free room in those units, so kinds of different sizes that want the same class share
it, and the flow sends the flexible kind elsewhere. The unplaced arc always exists, so the flow is feasible;
its cost is above any placement and falls with the kind's queue rank, so when room is short, earlier kinds
are placed first.
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import min_cost_flow

MAX_ARC_COST = 1_000_000


def solve(
    supply: np.ndarray,
    size: np.ndarray,
    arc_kind: np.ndarray,
    arc_node: np.ndarray,
    arc_cap: np.ndarray,
    arc_cost: np.ndarray,
    room: np.ndarray,
) -> np.ndarray:
    """Tasks sent along each (kind, capacity node) arc.

    `supply` (tasks) and `size` (units per task) per kind, kinds in queue-rank order; `arc_cap` in tasks,
    `arc_cost` per task; `room` per capacity node in units.
    """
    J = len(supply)
    C = len(room)
    if J == 0 or len(arc_kind) == 0:
        return np.zeros(len(arc_kind), np.int64)
    size = np.maximum(size.astype(np.int64), 1)
    units = supply * size
    src, sink = 0, 1 + J + C
    rank_penalty = (MAX_ARC_COST + 1) * (J - np.arange(J, dtype=np.int64))
    unplaced = (MAX_ARC_COST * 4 + rank_penalty) // size + 1
    tails = np.concatenate([np.zeros(J, np.int64), 1 + arc_kind, 1 + J + np.arange(C), 1 + np.arange(J)])
    heads = np.concatenate([1 + np.arange(J), 1 + J + arc_node, np.full(C, sink), np.full(J, sink)])
    caps = np.concatenate([units, arc_cap * size[arc_kind], room, units]).astype(np.int64)
    costs = np.concatenate(
        [
            np.zeros(J, np.int64),
            np.minimum(arc_cost, MAX_ARC_COST) // size[arc_kind],
            np.zeros(C, np.int64),
            unplaced,
        ]
    ).astype(np.int64)
    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int32), heads.astype(np.int32), caps, costs)
    total = int(units.sum())
    supplies = np.zeros(sink + 1, np.int64)
    supplies[src] = total
    supplies[sink] = -total
    mcf.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
    if mcf.solve() != mcf.OPTIMAL:
        return np.zeros(len(arc_kind), np.int64)
    arcs = np.arange(J, J + len(arc_kind), dtype=np.int32)
    return np.asarray(mcf.flows(arcs), dtype=np.int64) // size[arc_kind]
