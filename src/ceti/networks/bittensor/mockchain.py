"""Populate the SDK's own mock chain (`bittensor.utils.mock.MockSubtensor`) with subnets and a metagraph.

The mock has calls for creating subnets and registering neurons, but none for the fields an estimate reads
(incentive and emission per UID, tempo, burn, the subnet pool), so those are written into the mock's chain state,
where its own storage queries and `neurons()` read them back: `chain_state["SubtensorModule"][item][netuid]...
[block] = value`, in the chain's units (u16-normalised incentive, rao). The pool reserves (`SubnetTAO`,
`SubnetAlphaIn`) came with dynamic TAO, after the mock was written; they are added as storage items of the same
shape.

Used by the tests and by `ceti networks bittensor subnets --network mock`, which shows a small demonstration chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ceti.networks.bittensor.chain import RAO_PER_TAO

U16_MAX = 65535


@dataclass(frozen=True)
class MockNeuron:
    incentive: float  # 0..1
    emission_alpha: float  # alpha received in the last epoch
    validator: bool = False
    active: bool = True


@dataclass(frozen=True)
class MockSubnet:
    netuid: int
    neurons: tuple[MockNeuron, ...] = ()
    tempo: int = 360
    burn_tao: float = 0.0
    pool_tao: float = 0.0  # SubnetTAO
    pool_alpha: float = 0.0  # SubnetAlphaIn
    extra: dict[str, Any] = field(default_factory=dict)


def new_mock_chain() -> Any:
    """A fresh, empty mock chain. The SDK's mock keeps its state in one process-wide dict, so this resets it."""
    from bittensor.utils.mock import MockSubtensor

    MockSubtensor.reset()
    chain = MockSubtensor()
    chain.setup()
    return chain


def seed(chain: Any, subnets: Iterable[MockSubnet]) -> Any:
    state = chain.chain_state["SubtensorModule"]
    block = chain.block_number
    for subnet in subnets:
        netuid = subnet.netuid
        chain.create_subnet(netuid)
        state["Tempo"][netuid][block] = subnet.tempo
        state["Burn"][netuid][block] = round(subnet.burn_tao * RAO_PER_TAO)
        state.setdefault("SubnetTAO", {})[netuid] = {block: round(subnet.pool_tao * RAO_PER_TAO)}
        state.setdefault("SubnetAlphaIn", {})[netuid] = {block: round(subnet.pool_alpha * RAO_PER_TAO)}
        for i, neuron in enumerate(subnet.neurons):
            uid = chain.force_register_neuron(netuid=netuid, hotkey_ss58=f"hk-{netuid}-{i}",
                                              coldkey_ss58=f"ck-{netuid}-{i}")
            state["Incentive"][netuid][uid][block] = round(neuron.incentive * U16_MAX)
            state["Emission"][netuid][uid][block] = round(neuron.emission_alpha * RAO_PER_TAO)
            state["ValidatorPermit"][netuid][uid][block] = neuron.validator
            state["Active"][netuid][uid][block] = neuron.active
    return chain


def demo_subnets() -> list[MockSubnet]:
    """A small, made-up chain for trying the CLI offline, shaped like real subnets: about 0.41 alpha per block
    to miners (148 alpha per 361-block epoch), incentive spread over dozens of miners, a few validators."""

    def miners(weights: list[float], pool_alpha: float) -> tuple[MockNeuron, ...]:
        total = sum(weights)
        return tuple(MockNeuron(incentive=w / total, emission_alpha=w / total * pool_alpha) for w in weights)

    validators = (MockNeuron(0.0, 40.0, validator=True), MockNeuron(0.0, 25.0, validator=True))
    skewed = [1.0 / (rank + 1) for rank in range(64)]  # a few strong miners, a long tail
    flat = [1.0 + (rank % 4) * 0.1 for rank in range(32)]  # miners that score much alike
    return [
        MockSubnet(1, validators + miners(skewed, 148.0), tempo=360, burn_tao=0.3, pool_tao=40_000,
                   pool_alpha=2_000_000),
        MockSubnet(4, validators + miners(flat, 148.0), tempo=360, burn_tao=1.5, pool_tao=30_000,
                   pool_alpha=3_000_000),
        MockSubnet(9, validators + miners([1.0], 148.0), tempo=99, burn_tao=0.1, pool_tao=1_000, pool_alpha=900_000),
    ]
