"""The one interface every decentralized network adapter implements.

The fabric treats a network as a demand source like any other: for a class of node it asks what the network
would pay (with the inputs shown, so an operator can see why), what to run there (a real `JobSpec`), how to tell
that the workload is healthy, and how many nodes the network can use right now. Adapters own the network's real
formats and SDKs; nothing here knows about any one network.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from ceti.spec.job import JobSpec

# Every network workload carries its network's name in this environment variable, so the control plane (and the
# dashboard) can tell network work from developer work and which network it serves.
NETWORK_ENV = "FABRIC_NETWORK"
# what the workload earns the fabric, USD per hour: the ledger books it as the network's payment
REVENUE_ENV = "FABRIC_NETWORK_USD_PER_HOUR"


class NetworkError(ValueError):
    """Bad input for a network (an invalid document, an unknown subnet, a price source that is down): the
    message is one line a user can act on. Raising it means: no bid, nothing changed."""


@dataclass(frozen=True)
class NodeClass:
    """What a network needs to know about a kind of node to price it: hardware, place and the provider's terms."""

    gpu_model: str | None  # normalised, e.g. "H100-80GB"; None for a CPU-only node
    gpu_count: int
    vram_mib: int
    cpus: int
    memory_mib: int
    region: str = "local"
    floor_price_per_hour: float = 0.0  # the provider's floor for network work on this node, USD per hour


@dataclass(frozen=True)
class RevenueEstimate:
    """Expected revenue of running this network's workload on one node of a class, in USD per hour.

    `inputs` names every figure the estimate used (emission share, token price, registration cost, OBh rate,
    benchmark score, ...) so the estimate can be shown and audited; `detail` is one line saying how they combine.
    """

    network: str
    usd_per_hour: float
    inputs: dict[str, float | str] = field(default_factory=dict)
    detail: str = ""
    target: str = ""  # which part of the network: a subnet, a lease, a render tier


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    reason: str = ""


class NetworkAdapter(abc.ABC):
    """A decentralized network as a demand source. Implementations must not raise anything but `NetworkError`
    for bad input or an unreachable dependency."""

    name: str

    @abc.abstractmethod
    def estimate_revenue(self, node: NodeClass) -> list[RevenueEstimate]:
        """What the network would pay for one node of this class, best first; empty if it cannot use it."""

    @abc.abstractmethod
    def workload(self, node: NodeClass, estimate: RevenueEstimate) -> JobSpec:
        """The job to run on such a node to earn `estimate`. Always interruptible: paying developer work
        displaces it."""

    def workload_for_slot(self, node: NodeClass, estimate: RevenueEstimate, slot: int) -> JobSpec:
        """The workload for unit `slot` (0 .. capacity()-1) of the network's capacity: a miner's hotkey, a
        queued render job. The control plane keeps one workload per slot; by default slots are alike."""
        return self.workload(node, estimate)

    @abc.abstractmethod
    def check_health(self, job_name: str, log_tail: str, exit_code: int | None) -> HealthReport:
        """Whether a running workload is doing the network's work, from what the agent reports about it."""

    @abc.abstractmethod
    def capacity(self) -> int:
        """How many more nodes the network can use right now (0 = none)."""
