"""Trace variants: a pod list with a different workload mix, for checking a policy on files it was not tuned on.

Alibaba's openb variants (`multigpu50`, `gpushare40`, ...) change one thing of the `default` mix; these
functions make more such files from any pod list: more multi-GPU work, or more GPU sharing. A whole one-GPU
pod, chosen at random, takes the resources of a pod drawn from a pool (the multi-GPU pods, or the sharing
pods); it keeps its own name and times, so the file still replays. The variants are ours, not Alibaba's:
their exact recipe is not published with the trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ceti.sim.trace import WHOLE_GPU_MILLI, TracePod


class VariantError(ValueError):
    """The asked mix cannot be reached from this pod list."""


def multi_gpu_demand_share(pods: Sequence[TracePod]) -> float:
    """The share of the GPU demand (GPU milli) that pods of two or more GPUs ask."""
    total = sum(p.gpu_milli_total for p in pods)
    return sum(p.gpu_milli_total for p in pods if p.gpu_count >= 2) / total if total else 0.0


def share_pod_fraction(pods: Sequence[TracePod]) -> float:
    """The fraction of the GPU pods that ask for a share of one GPU."""
    gpu = sum(1 for p in pods if p.gpu_count > 0)
    return sum(1 for p in pods if p.is_gpu_share) / gpu if gpu else 0.0


def _whole_one_gpu(pods: Sequence[TracePod]) -> list[int]:
    return [i for i, p in enumerate(pods) if p.gpu_count == 1 and p.gpu_milli == WHOLE_GPU_MILLI]


def _take(replaced: TracePod, drawn: TracePod) -> TracePod:
    """`replaced` with the resources of `drawn`: its name and times stay."""
    return dataclasses.replace(
        replaced,
        cpu_milli=drawn.cpu_milli,
        memory_mib=drawn.memory_mib,
        gpu_count=drawn.gpu_count,
        gpu_milli=drawn.gpu_milli,
        gpu_spec=drawn.gpu_spec,
        gpu_models=drawn.gpu_models,
    )


def with_multi_gpu_demand(
    pods: Sequence[TracePod], target: float, pool: Sequence[TracePod], rng: np.random.Generator
) -> list[TracePod]:
    """Whole one-GPU pods, in random order, take the resources of multi-GPU pods drawn from `pool` until pods
    of two or more GPUs ask at least `target` of the GPU demand. A list already there is returned as it is."""
    if not 0 <= target < 1:
        raise VariantError(f"the multi-GPU demand share must be in [0, 1), not {target}")
    draw = [p for p in pool if p.gpu_count >= 2]
    out = list(pods)
    total = sum(p.gpu_milli_total for p in out)
    multi = sum(p.gpu_milli_total for p in out if p.gpu_count >= 2)
    if total == 0 or multi >= target * total:
        return out
    if not draw:
        raise VariantError("the pool has no pods of two or more GPUs to draw from")
    for i in rng.permutation(_whole_one_gpu(out)).tolist():
        new = _take(out[i], draw[int(rng.integers(len(draw)))])
        total += new.gpu_milli_total - out[i].gpu_milli_total
        multi += new.gpu_milli_total
        out[i] = new
        if multi >= target * total:
            return out
    raise VariantError(
        f"out of whole one-GPU pods to replace at a multi-GPU demand share of {multi / total:.3f} (asked {target})"
    )


def with_share_pods(
    pods: Sequence[TracePod], target: float, pool: Sequence[TracePod], rng: np.random.Generator
) -> list[TracePod]:
    """Whole one-GPU pods, in random order, take the resources of sharing pods drawn from `pool` until at least
    `target` of the GPU pods share a GPU. A list already there is returned as it is."""
    if not 0 <= target <= 1:
        raise VariantError(f"the sharing fraction must be in [0, 1], not {target}")
    draw = [p for p in pool if p.is_gpu_share]
    out = list(pods)
    gpu = sum(1 for p in out if p.gpu_count > 0)
    shares = sum(1 for p in out if p.is_gpu_share)
    if gpu == 0 or shares >= target * gpu:
        return out
    if not draw:
        raise VariantError("the pool has no pods that share a GPU to draw from")
    for i in rng.permutation(_whole_one_gpu(out)).tolist():
        out[i] = _take(out[i], draw[int(rng.integers(len(draw)))])
        shares += 1
        if shares >= target * gpu:
            return out
    raise VariantError(f"out of whole one-GPU pods to replace at a sharing fraction of {shares / gpu:.3f} (asked {target})")
