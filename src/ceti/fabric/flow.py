"""Min-cost flow between job classes and node classes (OR-Tools `SimpleMinCostFlow`, C++).

    source --(tasks of class j)--> job class j --(cap[j, c], cost[j, c])--> node class c --(slots[c])--> sink
                                       \\----------------(tasks, unplaced cost)--------------------------/

Flow units are tasks. A node class's `slots` is the most tasks of any single job class it could hold, so two
job classes that both want the same scarce class share it; the flow sends the flexible class elsewhere. The
unplaced arc always exists, so the flow is feasible. Its cost falls with the class's queue rank, so when
capacity is short, earlier classes are placed first; it is larger than any placement cost, so nothing
placeable is left out to save cost.
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import min_cost_flow

MAX_ARC_COST = 1_000_000


def solve(
    supply: np.ndarray,
    arc_job: np.ndarray,
    arc_node: np.ndarray,
    arc_cap: np.ndarray,
    arc_cost: np.ndarray,
    node_slots: np.ndarray,
) -> np.ndarray:
    """Tasks sent along each (job class, node class) arc; `supply` is in queue-rank order."""
    J = len(supply)
    C = len(node_slots)
    if J == 0 or len(arc_job) == 0:
        return np.zeros(len(arc_job), np.int64)
    src, sink = 0, 1 + J + C
    rank_penalty = (MAX_ARC_COST + 1) * (J - np.arange(J, dtype=np.int64))
    unplaced_cost = MAX_ARC_COST * 4 + rank_penalty
    tails = np.concatenate(
        [np.zeros(J, np.int64), 1 + arc_job, 1 + J + np.arange(C), 1 + np.arange(J)]
    ).astype(np.int32)
    heads = np.concatenate(
        [1 + np.arange(J), 1 + J + arc_node, np.full(C, sink), np.full(J, sink)]
    ).astype(np.int32)
    caps = np.concatenate([supply, arc_cap, node_slots, supply]).astype(np.int64)
    costs = np.concatenate(
        [np.zeros(J, np.int64), np.minimum(arc_cost, MAX_ARC_COST), np.zeros(C, np.int64), unplaced_cost]
    ).astype(np.int64)
    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    total = int(supply.sum())
    supplies = np.zeros(sink + 1, np.int64)
    supplies[src] = total
    supplies[sink] = -total
    mcf.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
    status = mcf.solve()
    if status != mcf.OPTIMAL:
        return np.zeros(len(arc_job), np.int64)
    first = J
    arcs = np.arange(first, first + len(arc_job), dtype=np.int32)
    return np.asarray(mcf.flows(arcs), dtype=np.int64)
