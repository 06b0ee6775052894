"""Bittensor as a demand source: subnet miners on idle GPUs, priced from the chain's own metagraph."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ceti.networks.base import (
    NETWORK_ENV,
    HealthReport,
    NetworkAdapter,
    NetworkError,
    NodeClass,
    RevenueEstimate,
)
from ceti.networks.bittensor.chain import ChainReader, SubtensorLike
from ceti.networks.bittensor.estimate import (
    NETWORK,
    EstimateSettings,
    SubnetProfile,
    estimate_subnet,
    netuid_of,
)
from ceti.networks.price import DEFAULT_TIMEOUT_S, PriceSource, read_price
from ceti.networks.template import check_template, check_value, fill
from ceti.spec.job import JobSpec, RetryOn, RetryPolicy

# The miner entry point most subnets ship (the subnet template's layout); a subnet that differs gets its own
# template in its SubnetProfile.
DEFAULT_MINER_COMMAND: tuple[str, ...] = (
    "python", "neurons/miner.py",
    "--netuid", "{netuid}",
    "--subtensor.network", "{network}",
    "--wallet.name", "{wallet}",
    "--wallet.hotkey", "{hotkey}",
    "--axon.port", "{axon_port}",
    "--logging.info",
)
PLACEHOLDERS = ("wallet", "hotkey", "netuid", "axon_port", "network")
REQUIRED_PLACEHOLDERS = ("wallet", "hotkey", "netuid")

NETWORK_WORK_PRIORITY = 10  # below every developer job's default (50): paying work always displaces it

# Lines a miner prints when it cannot do the network's work however long it runs.
_FATAL_LOG = re.compile(
    r"(is not registered|not registered on netuid|wallet .*does not exist|keyfile .*does not exist|"
    r"Address already in use|CUDA out of memory)", re.IGNORECASE)


@dataclass(frozen=True)
class SubnetRow:
    """One line of a subnet listing: an estimate, or why there is none."""

    netuid: int
    estimate: RevenueEstimate | None
    reason: str = ""


@dataclass
class BittensorConfig:
    """The operator's side of Bittensor: which wallet mines, where, and how earnings are judged."""

    wallet: str
    hotkeys: Sequence[str]  # one miner per hotkey; their number bounds how many nodes can mine
    network: str = "finney"
    subnets: Mapping[int, SubnetProfile] = field(default_factory=dict)  # empty = every subnet, default needs
    command: Sequence[str] = DEFAULT_MINER_COMMAND
    axon_port: int = 8091
    settings: EstimateSettings = field(default_factory=EstimateSettings)
    price_timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        check_value("wallet", self.wallet)
        if isinstance(self.hotkeys, str):
            raise NetworkError("hotkeys is a list of hotkey names, not one string")
        for hotkey in self.hotkeys:
            check_value("hotkey", hotkey)
        check_value("network", self.network)
        if isinstance(self.axon_port, bool) or not isinstance(self.axon_port, int) or not 1024 <= self.axon_port <= 65535:
            raise NetworkError(f"axon_port {self.axon_port!r} must be a port number 1024..65535")
        self.command = check_template(self.command, PLACEHOLDERS, REQUIRED_PLACEHOLDERS)
        for netuid, profile in self.subnets.items():
            if profile.netuid != netuid:
                raise NetworkError(f"subnet profile under {netuid} says netuid {profile.netuid}")
            if profile.command:
                check_template(profile.command, PLACEHOLDERS, REQUIRED_PLACEHOLDERS)
        if not self.price_timeout_s > 0:
            raise NetworkError("price_timeout_s must be above zero")


class BittensorAdapter(NetworkAdapter):
    """Reads the chain through an injected `Subtensor` (`bittensor.Subtensor(network=...)` in production, the SDK's
    `MockSubtensor` in tests) and the TAO price through an injected price source."""

    name = NETWORK

    def __init__(self, subtensor: SubtensorLike, tao_price: PriceSource, config: BittensorConfig):
        self.chain = ChainReader(subtensor, network=config.network)
        self.tao_price = tao_price
        self.config = config

    def profile(self, netuid: int) -> SubnetProfile:
        if self.config.subnets:
            if netuid not in self.config.subnets:
                raise NetworkError(f"subnet {netuid} is not among the subnets configured for mining "
                                   f"({', '.join(str(n) for n in sorted(self.config.subnets))})")
            return self.config.subnets[netuid]
        return SubnetProfile(netuid=netuid)

    def tao_usd(self) -> float:
        return read_price(self.tao_price, "TAO price", self.config.settings.max_tao_usd, self.config.price_timeout_s)

    def estimate_subnet(self, node: NodeClass, netuid: int, tao_usd: float | None = None) -> RevenueEstimate:
        """The estimate for one subnet, or a `NetworkError` saying why there is none (unknown subnet, hardware
        short of the subnet's needs, too few earning miners, no usable price)."""
        self.chain.require_subnet(netuid)
        profile = self.profile(netuid)
        unmet = profile.unmet_by(node)
        if unmet:
            raise NetworkError(f"subnet {netuid}: {unmet}")
        price = self.tao_usd() if tao_usd is None else tao_usd
        return estimate_subnet(self.chain.subnet(netuid), price, self.config.settings)

    def subnet_table(self, node: NodeClass) -> list[SubnetRow]:
        """Every candidate subnet with its estimate or the reason it has none, best first. The TAO price is read
        once; if it is unusable the whole table is (a `NetworkError`)."""
        tao_usd = self.tao_usd()
        netuids = sorted(self.config.subnets) if self.config.subnets else self.chain.subnet_ids()
        rows = []
        for netuid in netuids:
            if netuid == 0:
                continue  # the root network has no miners
            try:
                rows.append(SubnetRow(netuid, self.estimate_subnet(node, netuid, tao_usd)))
            except NetworkError as exc:
                rows.append(SubnetRow(netuid, None, str(exc)))
        rows.sort(key=lambda r: (r.estimate is None, -(r.estimate.usd_per_hour if r.estimate else 0.0), r.netuid))
        return rows

    def estimate_revenue(self, node: NodeClass) -> list[RevenueEstimate]:
        """Subnets worth mining on this node: those that pay more than the provider's floor, best first."""
        return [row.estimate for row in self.subnet_table(node)
                if row.estimate is not None and row.estimate.usd_per_hour > max(node.floor_price_per_hour, 0.0)]

    def workload(self, node: NodeClass, estimate: RevenueEstimate, hotkey: str | None = None) -> JobSpec:
        if estimate.network != NETWORK:
            raise NetworkError(f"an estimate for {estimate.network!r} cannot start a Bittensor miner")
        if not self.config.hotkeys:
            raise NetworkError("no hotkeys configured: a miner needs a registered hotkey")
        netuid = netuid_of(estimate.target)
        hotkey = hotkey if hotkey is not None else self.config.hotkeys[0]
        if hotkey not in self.config.hotkeys:
            raise NetworkError(f"hotkey {hotkey!r} is not one of the configured hotkeys")
        profile = self.profile(netuid)
        command = fill(profile.command or self.config.command, {
            "wallet": self.config.wallet,
            "hotkey": hotkey,
            "netuid": netuid,
            "axon_port": self.config.axon_port,
            "network": self.config.network,
        })
        gpus = max(profile.min_gpus, 0) if node.gpu_count else 0
        return JobSpec(
            name=f"bittensor-sn{netuid}-{hotkey}"[:63],
            command=command,
            env={NETWORK_ENV: "bittensor"},
            resources={
                "cpus": profile.cpus or max(node.cpus, 1),
                "memory": profile.memory_mib or max(node.memory_mib, 512),
                "gpus": {
                    "count": gpus,
                    "models": [node.gpu_model] if gpus and node.gpu_model else [],
                    "min_vram_mib": profile.min_vram_mib if gpus else 0,
                },
            },
            priority=NETWORK_WORK_PRIORITY,
            interruptible=True,
            retry=RetryPolicy(limit=100, on=[RetryOn.preemption, RetryOn.node_lost, RetryOn.failure]),
        )

    def workload_for_slot(self, node: NodeClass, estimate: RevenueEstimate, slot: int) -> JobSpec:
        """Slot i mines with the i-th configured hotkey: two miners never share one."""
        if not 0 <= slot < len(self.config.hotkeys):
            raise NetworkError(f"slot {slot} has no hotkey (hotkeys configured: {len(self.config.hotkeys)})")
        return self.workload(node, estimate, hotkey=self.config.hotkeys[slot])

    def check_health(self, job_name: str, log_tail: str, exit_code: int | None) -> HealthReport:
        match = _FATAL_LOG.search(log_tail or "")
        if match:
            return HealthReport(False, f"{job_name}: the miner reports {match.group(0)!r}")
        if exit_code is not None:
            if exit_code == 0:
                return HealthReport(False, f"{job_name}: the miner exited; a miner should run until stopped")
            return HealthReport(False, f"{job_name}: the miner exited with code {exit_code}")
        return HealthReport(True)

    def capacity(self) -> int:
        """One miner per configured hotkey; the control plane subtracts the ones already running."""
        return len(self.config.hotkeys)
