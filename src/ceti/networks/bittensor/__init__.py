"""Bittensor: mine subnets on idle GPUs, priced from the chain's metagraph.

The SDK is pinned to the 10.x line (`bittensor>=10,<11`): the 11.x releases are a rewrite that dropped the mock
chain (`bittensor.utils.mock.MockSubtensor`, which the tests run against) and the axon/dendrite layer that subnet
miners are built on. Importing this package does not import the SDK (it takes seconds); `connect()` does.
"""

from __future__ import annotations

from typing import Any

from ceti.networks.bittensor.adapter import BittensorAdapter, BittensorConfig, SubnetRow
from ceti.networks.bittensor.chain import ChainReader, SubtensorLike
from ceti.networks.bittensor.estimate import EstimateSettings, SubnetProfile
from ceti.networks.price import FixedPrice, HttpJsonPrice, PriceSource

__all__ = [
    "BittensorAdapter", "BittensorConfig", "ChainReader", "EstimateSettings", "FixedPrice", "HttpJsonPrice",
    "PriceSource", "SubnetProfile", "SubnetRow", "SubtensorLike", "connect",
]


def connect(network: str) -> Any:
    """A `Subtensor` for `network` ("finney", "test", "local" or a ws:// endpoint); "mock" is the SDK's mock
    chain holding a small demonstration chain."""
    if network == "mock":
        from ceti.networks.bittensor.mockchain import demo_subnets, new_mock_chain, seed

        return seed(new_mock_chain(), demo_subnets())
    # bittensor>=10,<11: 11.x dropped the mock chain and the axon/dendrite layer miners are built on
    import bittensor

    return bittensor.Subtensor(network=network)
