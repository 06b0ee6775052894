"""Placement policies: choose a node (and GPUs) for one task, the kube-scheduler framework's way.

Pure: NumPy arrays in, a decision out; no I/O, no clock. The simulator calls `policy.place` on a
`ClusterState`; the live scheduler calls `choose_node` with a few candidate nodes.
"""

from ceti.fabric.placement.fgd import FGDPolicy
from ceti.fabric.placement.policies import PlacementPolicy
from ceti.fabric.placement.registry import POLICIES, make_policy, policy_names
from ceti.fabric.placement.state import ClusterState, PodRequest
from ceti.fabric.placement.workload import TargetWorkload, TaskClass

__all__ = [
    "POLICIES",
    "ClusterState",
    "FGDPolicy",
    "PlacementPolicy",
    "PodRequest",
    "TargetWorkload",
    "TaskClass",
    "make_policy",
    "policy_names",
]
