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

Every mistake is a `NetworkError` naming the section and field; a server with a broken file refuses to start
rather than fill the network with work nobody configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ceti.networks.base import NetworkAdapter, NetworkError


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


class NetworksFile(_Section):
    bittensor: BittensorSection | None = None
    render: RenderSection | None = None


def load_network_config(path: str | Path) -> dict[str, NetworkAdapter]:
    """Adapters for every network the file configures, by name."""
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
    adapters: dict[str, NetworkAdapter] = {}
    if doc.bittensor is not None:
        adapters["bittensor"] = _bittensor(doc.bittensor)
    if doc.render is not None:
        adapters["render"] = _render(doc.render)
    return adapters


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
