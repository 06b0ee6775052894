"""What the Render Network pays a node: its OctaneBench score times the rate per OctaneBench-hour (OBh) of the tier
the work is sold at.

Render sells GPU time in OBh: one OctaneBench point of rendering power for one hour, so a node's hourly revenue is
its score x the OBh rate. Work is not bid for: the network assigns it by tier, reputation and availability.

Tiers (Render Network knowledge base, "RENDER Pricing of Compute Work",
https://know.rendernetwork.com/basics/how-much-does-rndr-cost, and the Node Operator FAQ,
https://know.rendernetwork.com/faqs/node-operators-faq):

- Tier 1 "Trusted": announced, not released; not offered here.
- Tier 2 "Priority": queue priority and higher hardware and reputation requirements; one RENDER credit buys
  100 OBh, so a node earns 1/100 of a credit per OBh.
- Tier 3 "Economy": no queue priority; one RENDER credit buys 200 OBh (1/200 of a credit per OBh).
- Every node: an NVIDIA CUDA GPU (compute capability 3.0+), at least 8 GB of GPU memory and 32 GB of RAM.

Our rule for a node's tiers: Economy if it meets the network's minimum; Priority as well if the operator says the
node has been admitted to it, because admission rests on a reputation the network keeps and we cannot see.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ceti.networks.base import NetworkError, NodeClass, RevenueEstimate

NETWORK = "render"
MIN_VRAM_MIB = 8 * 1024
MIN_MEMORY_MIB = 32 * 1024
MAX_OBH_RATE_USD = 0.1  # render farms sell OBh at 0.0025-0.011 EUR; ten times the dearest is a broken input
MAX_SCORE_PER_GPU = 10_000.0  # the fastest single GPUs score about 1,500


@dataclass(frozen=True)
class Tier:
    name: str
    obh_per_credit: float  # OBh one RENDER credit buys at this tier
    needs_admission: bool  # the network admits nodes to it on reputation


TIERS: dict[str, Tier] = {
    "priority": Tier("priority", obh_per_credit=100.0, needs_admission=True),
    "economy": Tier("economy", obh_per_credit=200.0, needs_admission=False),
}


def tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise NetworkError(f"unknown Render tier {name!r}; known: {', '.join(TIERS)}") from None


def check_obh_rate(rate: object, what: str = "OBh rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise NetworkError(f"{what} {rate!r} must be a number of USD above zero")
    if rate > MAX_OBH_RATE_USD:
        raise NetworkError(f"{what} {rate:g} USD per OctaneBench-hour is above the sanity limit of "
                           f"{MAX_OBH_RATE_USD:g}; render farms sell an OBh for about a cent")
    return float(rate)


@cache
def score_table() -> dict[str, dict]:
    data = json.loads(resources.files("ceti.networks.render").joinpath("octanebench.json").read_text())
    return data["scores"]


def model_family(gpu_model: str) -> str:
    """'A100-40GB' -> 'A100': memory variants of one chip render alike."""
    return re.sub(r"-\d+GB$", "", gpu_model.strip())


def per_gpu_score(gpu_model: str | None, measured: float | None = None) -> tuple[float, str]:
    """(score of one GPU, where it comes from)."""
    if measured is not None:
        if isinstance(measured, bool) or not isinstance(measured, int | float) or not math.isfinite(measured) \
                or not 0 < measured <= MAX_SCORE_PER_GPU:
            raise NetworkError(f"measured OctaneBench score {measured!r} must be a number in (0, {MAX_SCORE_PER_GPU:g}]")
        return float(measured), "measured"
    if not gpu_model:
        raise NetworkError("Render needs an NVIDIA GPU; the node has none")
    entry = score_table().get(model_family(gpu_model))
    if entry is None:
        raise NetworkError(f"no OctaneBench score on file for {gpu_model}; measure the node with OctaneBench "
                           f"and give the score (known: {', '.join(sorted(score_table()))})")
    return float(entry["score"]), entry["source"]


def unmet_minimum(node: NodeClass) -> str | None:
    if node.gpu_count < 1 or not node.gpu_model:
        return "Render needs an NVIDIA GPU; the node has none"
    if node.vram_mib < MIN_VRAM_MIB:
        return f"Render needs {MIN_VRAM_MIB} MiB of GPU memory, the node has {node.vram_mib}"
    if node.memory_mib < MIN_MEMORY_MIB:
        return f"Render needs {MIN_MEMORY_MIB} MiB of RAM, the node has {node.memory_mib}"
    return None


def estimate_node(node: NodeClass, obh_rate_usd: float, tier_name: str,
                  measured_score_per_gpu: float | None = None, check_minimum: bool = True) -> RevenueEstimate:
    """Revenue of one node at one tier: per-GPU score x GPUs x OBh rate."""
    rate = check_obh_rate(obh_rate_usd)
    chosen = tier(tier_name)
    if check_minimum:
        unmet = unmet_minimum(node)
        if unmet:
            raise NetworkError(unmet)
    score, source = per_gpu_score(node.gpu_model, measured_score_per_gpu)
    gpus = max(node.gpu_count, 1)
    node_score = score * gpus
    usd = node_score * rate
    return RevenueEstimate(
        network=NETWORK,
        usd_per_hour=usd,
        target=chosen.name,
        inputs={
            "gpu_model": node.gpu_model or "",
            "gpu_count": gpus,
            "octanebench_per_gpu": score,
            "octanebench_source": source,
            "octanebench_node": node_score,
            "obh_rate_usd": rate,
            "tier": chosen.name,
            "obh_per_credit": chosen.obh_per_credit,
        },
        detail=f"{score:g} OB x {gpus} GPU(s) x {rate:g} USD/OBh ({chosen.name} tier) = {usd:.4f} USD/h",
    )
