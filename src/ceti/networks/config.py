"""The operator's network configuration: which networks fill idle capacity, with which accounts and prices.

One YAML file (the server reads it from `CETI_NETWORKS_CONFIG`) with a section per network, for example:

    bittensor:
      chain: finney            # or "mock": the SDK's own mock chain with a small demonstration network
      tao_usd: 420.0           # a stated price, or price_url + price_path for a JSON price feed
      wallet: fabric
      hotkeys: [miner-1, miner-2]
      command: [python, neurons/miner.py, --netuid, "{netuid}", --wallet.name, "{wallet}", --wallet.hotkey, "{hotkey}"]
    render:
      obh_rate_usd: {economy: 0.004}
      jobs:
        - {job_id: r1, scene: scene.blend, frame_start: 1, frame_end: 24}
    akash:                     # the provider side of the Akash market (orders arrive over the admin API)
      usd_per_token: {uakt: 3.1}
      block_time_s: 6.0
      pricing:
        scale: {cpu_per_millicore: 0.00002, memory_per_gib: 0.002, gpu_per_hour: {H100-80GB: 2.5, "*": 0.9}}
        # or: script: [python3, price.py]   (the order as JSON on stdin, a price per block on stdout)
      attributes: {region: eu-west}

Every mistake is a `NetworkError` naming the section and field; a server with a broken file refuses to start
rather than fill the network with work nobody configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ceti.networks.base import NetworkAdapter, NetworkError

if TYPE_CHECKING:  # the Akash modules load only when a file configures Akash
    from ceti.networks.akash.market import ProviderTerms
    from ceti.networks.akash.pricing import DenomRates, PriceStrategy


@dataclass(frozen=True)
class AkashMarket:
    """What the fabric needs to act as an Akash provider: how it prices an order, what a token is worth, what
    it advertises on chain."""

    pricing: PriceStrategy  # scale prices or the bid price script
    rates: DenomRates
    provider: ProviderTerms
    storage_classes: frozenset[str] = frozenset()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BittensorSection(_Section):
    chain: str = "finney"
    tao_usd: float | None = Field(None, gt=0, le=100_000)
    price_url: str | None = None
    price_path: str = "bittensor.usd"
    wallet: str
    hotkeys: list[str] = Field(..., min_length=1, max_length=10_000)
    command: list[str] | None = None
    axon_port: int = Field(8091, ge=1024, le=65535)


class RenderJobEntry(_Section):
    job_id: str
    scene: str
    frame_start: int
    frame_end: int
    engine: str = "CYCLES"
    tier: str = "economy"


class RenderSection(_Section):
    obh_rate_usd: dict[str, float] = Field(default_factory=dict)
    command: list[str] | None = None
    jobs: list[RenderJobEntry] = Field(default_factory=list, max_length=100_000)


class AkashScale(_Section):
    cpu_per_millicore: float = Field(0.0, ge=0)
    memory_per_gib: float = Field(0.0, ge=0)
    storage_per_gib: float = Field(0.0, ge=0)
    persistent_storage_per_gib: dict[str, float] = Field(default_factory=dict)
    gpu_per_hour: dict[str, float] = Field(default_factory=dict)
    endpoint_per_hour: float = Field(0.0, ge=0)
    ip_endpoint_per_hour: float = Field(0.0, ge=0)


class AkashPricing(_Section):
    scale: AkashScale | None = None
    script: list[str] | None = Field(None, min_length=1)
    script_timeout_s: float = Field(5.0, gt=0, le=60)


class AkashSection(_Section):
    usd_per_token: dict[str, float] = Field(..., min_length=1)
    block_time_s: float = Field(6.0, gt=0, le=600)
    exponent: dict[str, int] = Field(default_factory=dict)
    pricing: AkashPricing
    attributes: dict[str, str] = Field(default_factory=dict)
    audited_by: list[str] = Field(default_factory=list)
    ip_endpoints: int = Field(0, ge=0)
    storage_classes: list[str] = Field(default_factory=list)


class NetworksFile(_Section):
    bittensor: BittensorSection | None = None
    render: RenderSection | None = None
    akash: AkashSection | None = None


def load_network_config(path: str | Path) -> dict[str, NetworkAdapter]:
    """Adapters for every network that back-fills single idle nodes, by name (Akash leases, which arrive as
    orders and may span nodes, are run by the server's market instead: `load_akash_market`)."""
    doc = _read(path)
    adapters: dict[str, NetworkAdapter] = {}
    if doc.bittensor is not None:
        adapters["bittensor"] = _bittensor(doc.bittensor)
    if doc.render is not None:
        adapters["render"] = _render(doc.render)
    return adapters


def load_akash_market(path: str | Path) -> AkashMarket | None:
    """The operator's Akash provider terms, or None when the file has no `akash` section."""
    doc = _read(path)
    if doc.akash is None:
        return None
    from ceti.networks.akash.market import ProviderTerms
    from ceti.networks.akash.price_script import ScriptPricing
    from ceti.networks.akash.pricing import DenomRates, ScalePricing

    c = doc.akash
    if (c.pricing.scale is None) == (c.pricing.script is None):
        raise NetworkError(f"{path}: akash.pricing: give exactly one of scale or script")
    try:
        rates = DenomRates(usd_per_token=dict(c.usd_per_token), block_time_s=c.block_time_s,
                           exponent=dict(c.exponent))
        strategy: PriceStrategy | None = (ScalePricing(**c.pricing.scale.model_dump())
                                          if c.pricing.scale is not None else None)
    except (NetworkError, ValueError) as exc:  # the market's own range checks
        raise NetworkError(f"{path}: akash: {exc}") from None
    if strategy is None:
        strategy = ScriptPricing(tuple(c.pricing.script or ()), timeout_s=c.pricing.script_timeout_s)
    terms = ProviderTerms(attributes=dict(c.attributes), audited_by=frozenset(c.audited_by),
                          ip_endpoints=c.ip_endpoints)
    return AkashMarket(pricing=strategy, rates=rates, provider=terms, storage_classes=frozenset(c.storage_classes))


def _read(path: str | Path) -> NetworksFile:
    try:
        raw: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise NetworkError(f"cannot read the network configuration {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise NetworkError(f"{path}: malformed YAML ({exc})") from None
    try:
        doc = NetworksFile.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise NetworkError(f"{path}: {where}: {first['msg']}") from None
    return doc


def _bittensor(c: BittensorSection) -> NetworkAdapter:
    from ceti.networks.bittensor import connect
    from ceti.networks.bittensor.adapter import BittensorAdapter, BittensorConfig
    from ceti.networks.price import FixedPrice, HttpJsonPrice

    if c.tao_usd is None and c.price_url is None:
        raise NetworkError("bittensor: give tao_usd or price_url")
    price = FixedPrice(c.tao_usd) if c.tao_usd is not None else HttpJsonPrice(c.price_url, c.price_path)
    extra = {"command": tuple(c.command)} if c.command else {}
    config = BittensorConfig(wallet=c.wallet, hotkeys=tuple(c.hotkeys), network=c.chain, axon_port=c.axon_port,
                             **extra)
    try:
        subtensor = connect(c.chain)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds for an unreachable chain
        raise NetworkError(f"bittensor: cannot reach chain {c.chain!r}: {exc}") from None
    return BittensorAdapter(subtensor, price, config)


def _render(c: RenderSection) -> NetworkAdapter:
    from ceti.networks.render.adapter import RenderAdapter, RenderConfig
    from ceti.networks.render.jobs import RenderJob

    extra = {"command": tuple(c.command)} if c.command else {}
    config = RenderConfig(obh_rate_usd=c.obh_rate_usd, **extra)
    return RenderAdapter(config, [RenderJob(**j.model_dump()) for j in c.jobs])
