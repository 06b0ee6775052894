"""Policies by name, so the simulator and the server can swap them."""

from __future__ import annotations

from ceti.fabric.placement.fabric import FabricPolicy
from ceti.fabric.placement.fgd import FGDPolicy
from ceti.fabric.placement.policies import (
    BestFitPolicy,
    DotProductPolicy,
    FirstFitPolicy,
    GpuClusteringPolicy,
    GpuPackingPolicy,
    PlacementPolicy,
    RandomPolicy,
)
from ceti.fabric.placement.workload import TargetWorkload

POLICIES: dict[str, type[PlacementPolicy]] = {
    cls.name: cls
    for cls in (
        RandomPolicy,
        FirstFitPolicy,
        BestFitPolicy,
        DotProductPolicy,
        GpuPackingPolicy,
        GpuClusteringPolicy,
        FGDPolicy,
        FabricPolicy,
    )
}


def policy_names() -> list[str]:
    return list(POLICIES)


def make_policy(name: str, workload: TargetWorkload | None = None) -> PlacementPolicy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; known: {', '.join(POLICIES)}") from None
    return cls(workload)
