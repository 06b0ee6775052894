"""What the adapter reads from a Bittensor chain, through a `bittensor.Subtensor` it is given.

Production passes `bittensor.Subtensor(network="finney")`; tests pass the SDK's own mock chain
(`bittensor.utils.mock.MockSubtensor`). The two agree only on a narrow surface, so this module reads through that
surface alone:

- `query_subtensor(name=..., params=[...])` and `query_map_subtensor(name=...)` for storage items (always by
  keyword: the mock's positional order differs from the real client's);
- `neurons(netuid=...)` for the metagraph. (`neurons_lite()` would be lighter, but the 10.5 mock cannot build a
  lite neuron: it fails on a missing attribute.)

The SDK's convenience getters (`get_all_subnets_netuid`, `subnet_exists`, `recycle`, `tempo`) are not used: on the
mock they go through a `MagicMock` substrate and answer mock objects instead of failing.

Storage read:
- `NetworksAdded[netuid]`: the subnet exists.
- `Burn[netuid]`: the current registration cost, in rao of TAO.
- `Tempo[netuid]`: blocks per epoch; a subnet's `Emission` per UID is what it got in its last epoch.
- `SubnetTAO[netuid]` and `SubnetAlphaIn[netuid]`: the subnet pool's reserves since dynamic TAO; their ratio is the
  price of the subnet's alpha token in TAO, which is what miners are paid in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ceti.networks.base import NetworkError

RAO_PER_TAO = 1_000_000_000


class SubtensorLike(Protocol):
    """The part of `bittensor.Subtensor` this adapter uses."""

    def query_subtensor(self, name: str, block: int | None = None, params: list | None = None) -> Any: ...

    def query_map_subtensor(self, name: str, block: int | None = None, params: list | None = None) -> Any: ...

    def neurons(self, netuid: int, block: int | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class Neuron:
    """One UID of a subnet's metagraph, reduced to what an estimate needs."""

    uid: int
    hotkey: str
    active: bool
    validator_permit: bool
    incentive: float  # share of the subnet's miner emission, 0..1 (normalised by the SDK)
    emission_per_epoch: float  # tokens (alpha) this UID received in the subnet's last epoch


@dataclass(frozen=True)
class SubnetState:
    netuid: int
    tempo_blocks: int
    burn_tao: float
    alpha_price_tao: float
    neurons: tuple[Neuron, ...]


def _value(obj: Any) -> Any:
    """Storage answers come wrapped (`.value`) from both the real client and the mock; map keys may not be."""
    return getattr(obj, "value", obj)


class ChainReader:
    """Reads subnets and metagraphs; every failure of the chain becomes a `NetworkError` with the subnet named."""

    def __init__(self, subtensor: SubtensorLike, network: str = "finney"):
        self.subtensor = subtensor
        self.network = network

    def _query(self, name: str, netuid: int) -> Any:
        try:
            return _value(self.subtensor.query_subtensor(name=name, params=[netuid]))
        except KeyError:
            # the chain (or the mock's state) has no such storage item at all
            raise NetworkError(f"the {self.network} chain has no {name} storage; is it a dynamic-TAO chain?") from None
        except NetworkError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises anything; the interface promises NetworkError
            raise NetworkError(f"reading {name} of subnet {netuid} from {self.network} failed: {exc}") from None

    def subnet_ids(self) -> list[int]:
        try:
            records = self.subtensor.query_map_subtensor(name="NetworksAdded")
            netuids = [int(_value(key)) for key, added in records if _value(added)]
        except Exception as exc:  # noqa: BLE001 - the SDK raises anything; the interface promises NetworkError
            raise NetworkError(f"listing the subnets of {self.network} failed: {exc}") from None
        return sorted(netuids)

    def require_subnet(self, netuid: int) -> None:
        if isinstance(netuid, bool) or not isinstance(netuid, int) or not 0 <= netuid <= 65535:
            raise NetworkError(f"{netuid!r} is not a subnet id (netuid: an integer 0..65535)")
        if not self._query("NetworksAdded", netuid):
            raise NetworkError(f"subnet {netuid} does not exist on {self.network}")

    def subnet(self, netuid: int) -> SubnetState:
        self.require_subnet(netuid)
        tempo = self._query("Tempo", netuid)
        burn_rao = self._query("Burn", netuid)
        if not isinstance(tempo, int) or tempo <= 0:
            raise NetworkError(f"subnet {netuid} on {self.network} has no usable tempo ({tempo!r})")
        if not isinstance(burn_rao, int) or burn_rao < 0:
            raise NetworkError(f"subnet {netuid} on {self.network} has no usable registration cost ({burn_rao!r})")
        return SubnetState(
            netuid=netuid,
            tempo_blocks=tempo,
            burn_tao=burn_rao / RAO_PER_TAO,
            alpha_price_tao=self.alpha_price_tao(netuid),
            neurons=tuple(self.neurons(netuid)),
        )

    def alpha_price_tao(self, netuid: int) -> float:
        if netuid == 0:
            return 1.0  # the root network pays in TAO itself
        tao_in = self._query("SubnetTAO", netuid)
        alpha_in = self._query("SubnetAlphaIn", netuid)
        if not isinstance(tao_in, int) or not isinstance(alpha_in, int) or tao_in < 0 or alpha_in <= 0:
            raise NetworkError(f"subnet {netuid} on {self.network} has no priced pool "
                               f"(SubnetTAO={tao_in!r}, SubnetAlphaIn={alpha_in!r})")
        return tao_in / alpha_in

    def neurons(self, netuid: int) -> list[Neuron]:
        try:
            infos = self.subtensor.neurons(netuid=netuid)
        except Exception as exc:  # noqa: BLE001 - the SDK raises anything; the interface promises NetworkError
            raise NetworkError(f"reading the metagraph of subnet {netuid} from {self.network} failed: {exc}") from None
        out = []
        for info in infos:
            if getattr(info, "is_null", False):
                continue
            out.append(Neuron(
                uid=int(info.uid),
                hotkey=str(info.hotkey),
                active=bool(info.active),
                validator_permit=bool(info.validator_permit),
                incentive=float(info.incentive),
                emission_per_epoch=float(info.emission),
            ))
        return out
