"""Bid pricing for Akash orders, and the conversion between Akash prices and the fabric's USD per hour.

Akash prices are amounts of a micro-denomination (uakt, uact, an IBC token) per block. The fabric reasons in
USD per hour, so a price converts with two inputs the operator configures and every estimate shows: the
token's USD price and the chain's block time. Two strategies, as Akash providers have: scale prices per
resource (per millicore, GiB of memory and storage, GPU by model, endpoint), set here in USD per hour, and an
external script (see `price_script`) that prints the price per block itself. Whatever a strategy says, the
bid is never above the order's maximum and never below the provider's floor; when the two cross, no bid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from ceti.networks.akash.market import FreeNode, NoFit, Order, Placement, ProviderTerms, place_order
from ceti.networks.base import NetworkError

PRICE_QUANTUM = Decimal("0.000001")  # bids carry at most 6 decimals of the micro-denomination


@dataclass(frozen=True)
class DenomRates:
    """USD per whole token for each denom the provider accepts (1 token = 10^exponent micro-units) and the
    chain's mean block time."""

    usd_per_token: dict[str, float]
    block_time_s: float = 6.0
    exponent: dict[str, int] = field(default_factory=dict)  # default 6 (uakt, uact, most IBC tokens)

    def __post_init__(self) -> None:
        if not math.isfinite(self.block_time_s) or self.block_time_s <= 0:
            raise NetworkError(f"block time must be a positive number of seconds, not {self.block_time_s!r}")
        for denom, usd in self.usd_per_token.items():
            if not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd <= 0:
                raise NetworkError(f"USD price of {denom} must be a positive number, not {usd!r}")

    @property
    def blocks_per_hour(self) -> float:
        return 3600.0 / self.block_time_s

    def usd_per_micro(self, denom: str) -> float:
        if denom not in self.usd_per_token:
            raise NetworkError(f"no USD price configured for denom {denom!r}")
        return self.usd_per_token[denom] / 10 ** self.exponent.get(denom, 6)

    def to_usd_per_hour(self, amount_per_block: Decimal, denom: str) -> float:
        return float(amount_per_block) * self.blocks_per_hour * self.usd_per_micro(denom)

    def to_per_block(self, usd_per_hour: float, denom: str) -> Decimal:
        """The amount per block worth `usd_per_hour`, rounded up to the bid precision."""
        raw = usd_per_hour / self.blocks_per_hour / self.usd_per_micro(denom)
        return Decimal(repr(raw)).quantize(PRICE_QUANTUM, rounding=ROUND_CEILING)

    def inputs(self, denom: str) -> dict[str, float | str]:
        return {
            "denom": denom,
            "denom_usd_per_token": self.usd_per_token.get(denom, float("nan")),
            "denom_exponent": self.exponent.get(denom, 6),
            "block_time_s": self.block_time_s,
            "blocks_per_hour": round(self.blocks_per_hour, 3),
        }


class PriceStrategy(Protocol):
    name: str

    def price(self, order: Order, rates: DenomRates) -> Decimal:
        """The price per block, in the order's denom, for the whole order. Raise NetworkError for no price."""
        ...


@dataclass(frozen=True)
class ScalePricing:
    """Per-resource prices in USD per hour, summed over every replica of the order.

    `gpu_per_hour` maps fabric GPU models ("H100-80GB", "RTX4090") to a per-GPU rate; "*" is the rate for a
    model not listed (without it such a GPU has no price and the order gets no bid)."""

    cpu_per_millicore: float = 0.0
    memory_per_gib: float = 0.0
    storage_per_gib: float = 0.0
    persistent_storage_per_gib: dict[str, float] = field(default_factory=dict)  # by class; else storage_per_gib
    gpu_per_hour: dict[str, float] = field(default_factory=dict)
    endpoint_per_hour: float = 0.0
    ip_endpoint_per_hour: float = 0.0
    name: str = "scale"

    def __post_init__(self) -> None:
        rates = [self.cpu_per_millicore, self.memory_per_gib, self.storage_per_gib, self.endpoint_per_hour,
                 self.ip_endpoint_per_hour, *self.persistent_storage_per_gib.values(), *self.gpu_per_hour.values()]
        for rate in rates:
            if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
                raise NetworkError(f"scale prices must be finite and not negative, not {rate!r}")

    def usd_per_hour(self, order: Order, gpu_model: str | None = None) -> float:
        total = 0.0
        for unit in order.resources:
            one = unit.cpu_milli * self.cpu_per_millicore + unit.memory_mib / 1024 * self.memory_per_gib
            for volume in unit.storage:
                if volume.storage_class == "ram":
                    continue  # RAM-backed volumes are counted as memory by the provider, not disk
                rate = self.persistent_storage_per_gib.get(volume.storage_class or "", self.storage_per_gib) \
                    if volume.persistent else self.storage_per_gib
                one += volume.size_mib / 1024 * rate
            if unit.gpu.units:
                one += unit.gpu.units * self._gpu_rate(unit.gpu.models, gpu_model)
            one += unit.global_endpoints * self.endpoint_per_hour + unit.ip_endpoints * self.ip_endpoint_per_hour
            total += one * unit.count
        return total

    def _gpu_rate(self, models: list[str], node_model: str | None) -> float:
        # the model the replica will get: the node's when known, else the dearest the order admits
        candidates = [node_model] if node_model else (models or list(self.gpu_per_hour))
        rates = [self.gpu_per_hour[m] for m in candidates if m in self.gpu_per_hour]
        if rates:
            return max(rates)
        if "*" in self.gpu_per_hour:
            return self.gpu_per_hour["*"]
        raise NetworkError(f"no GPU price for {', '.join(candidates) or 'any model'} (set gpu_per_hour['*'])")

    def price(self, order: Order, rates: DenomRates, gpu_model: str | None = None) -> Decimal:
        return rates.to_per_block(self.usd_per_hour(order, gpu_model), order.denom)


def order_document(order: Order, rates: DenomRates) -> dict[str, object]:
    """The order as a price script reads it on stdin (JSON)."""
    return {
        "order_id": order.order_id,
        "group": order.group,
        "denom": order.denom,
        "max_price_per_block": str(order.max_price),
        "price_precision": 6,
        "denom_usd_per_token": rates.usd_per_token.get(order.denom),
        "block_time_s": rates.block_time_s,
        "attributes": order.attributes,
        "resources": [
            {
                "name": u.name,
                "count": u.count,
                "price_per_block": str(u.price),
                "cpu_millicores": u.cpu_milli,
                "memory_mib": u.memory_mib,
                "storage": [v.model_dump() for v in u.storage],
                "gpu": {"units": u.gpu.units, "models": u.gpu.models, "akash_models": u.gpu.akash_models,
                        "min_vram_mib": u.gpu.min_vram_mib},
                "global_endpoints": u.global_endpoints,
                "ip_endpoints": u.ip_endpoints,
            }
            for u in order.resources
        ],
    }


def order_json(order: Order, rates: DenomRates) -> str:
    return json.dumps(order_document(order, rates), sort_keys=True)


@dataclass(frozen=True)
class Bid:
    order_id: str
    denom: str
    price_per_block: Decimal
    usd_per_hour: float
    placement: Placement
    strategy: str
    inputs: dict[str, float | str]
    detail: str


@dataclass(frozen=True)
class NoBid:
    order_id: str
    reason: str


def decide_bid(order: Order, nodes: list[FreeNode], strategy: PriceStrategy, rates: DenomRates,
               provider: ProviderTerms | None = None) -> Bid | NoBid:
    """Whether to bid on an order and at what price. Pure except for what the strategy does (a script
    strategy runs a process); a strategy's NetworkError becomes a NoBid with its reason."""
    placement = place_order(order, nodes, provider)
    if isinstance(placement, NoFit):
        return NoBid(order.order_id, placement.reason)
    try:
        rates.usd_per_micro(order.denom)
        gpu_models = {n.gpu_model for n in nodes if n.node_id in set(placement.nodes.values()) and n.gpu_model}
        if isinstance(strategy, ScalePricing):
            asked = strategy.price(order, rates, next(iter(gpu_models)) if len(gpu_models) == 1 else None)
        else:
            asked = strategy.price(order, rates)
    except NetworkError as exc:
        return NoBid(order.order_id, f"{strategy.name} pricing: {exc}")
    floor = rates.to_per_block(placement.floor_usd_per_hour, order.denom) if placement.floor_usd_per_hour else \
        Decimal(0)
    maximum = order.max_price
    if floor > maximum:
        return NoBid(order.order_id, f"the provider's floor {floor} {order.denom}/block is above the order's "
                                     f"maximum {maximum}")
    if asked > maximum:
        return NoBid(order.order_id, f"{strategy.name} price {asked} {order.denom}/block is above the order's "
                                     f"maximum {maximum}")
    price = max(asked, floor)
    usd = rates.to_usd_per_hour(price, order.denom)
    inputs: dict[str, float | str] = {
        **rates.inputs(order.denom),
        "strategy": strategy.name,
        "strategy_price_per_block": str(asked),
        "floor_per_block": str(floor),
        "floor_usd_per_hour": round(placement.floor_usd_per_hour, 6),
        "order_max_per_block": str(maximum),
        "bid_per_block": str(price),
    }
    detail = (f"{price} {order.denom}/block x {rates.blocks_per_hour:.1f} blocks/h x "
              f"{rates.usd_per_micro(order.denom):.3g} USD/{order.denom} = {usd:.4f} USD/h"
              + (" (raised to the provider's floor)" if floor > asked else ""))
    return Bid(order.order_id, order.denom, price, usd, placement, strategy.name, inputs, detail)
