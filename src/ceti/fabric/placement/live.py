"""The live scheduler's door into the placement policies: pick a node among a few candidates.

The server knows its nodes as `ceti.fabric.model` values; it passes what is free on each candidate as a
`NodeFree` and gets back the node and the GPU indices (positions in `gpu_free_milli`) to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ceti.fabric.model import WHOLE_GPU_MILLI, Demand
from ceti.fabric.placement.registry import make_policy
from ceti.fabric.placement.state import MAX_GPUS_PER_NODE, ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload


@dataclass(frozen=True, slots=True)
class NodeFree:
    node_id: str
    cpu_milli: int  # free
    memory_mib: int  # free
    gpu_free_milli: tuple[int, ...] = ()  # per GPU, 0..1000
    gpu_model: str = ""


def pod_request(demand: Demand, state: ClusterState) -> PodRequest:
    count = demand.gpu_count or (1 if demand.gpu_share_milli else 0)
    milli = (demand.gpu_share_milli or WHOLE_GPU_MILLI) if count else 0
    mask = state.model_mask(demand.gpu_models) if count and demand.gpu_models else None
    return PodRequest(demand.cpu_milli, demand.memory_mib, count, milli, mask)


def choose_node(
    policy_name: str,
    candidates: Sequence[NodeFree],
    demand: Demand,
    workload: TargetWorkload | None = None,
    *,
    seed: int = 0,
) -> tuple[str, tuple[int, ...]] | None:
    """The policy's choice among `candidates`, or None when none can take the demand.

    Deterministic for a given `seed` (only `random` uses it). FGD and fabric measure fragmentation
    against `workload`; without one they take the demand itself as the whole target workload.
    """
    usable = [
        c
        for c in candidates
        if len(c.gpu_free_milli) <= MAX_GPUS_PER_NODE
        and (not demand.node_ids or c.node_id in demand.node_ids)
    ]
    if not usable:
        return None
    state = ClusterState.build(
        names=[c.node_id for c in usable],
        cpu_milli=[c.cpu_milli for c in usable],
        memory_mib=[c.memory_mib for c in usable],
        gpu_models=[c.gpu_model for c in usable],
        gpu_free_milli=[c.gpu_free_milli for c in usable],
    )
    policy = make_policy(policy_name, workload)
    choice = policy.place(state, pod_request(demand, state), np.random.default_rng(seed))
    if choice is None:
        return None
    node, gpus = choice
    return state.names[node], tuple(sorted(gpus))
