"""What a new miner would earn on a subnet: pure arithmetic over one read of the chain.

The chain records what each UID earned, not what hardware it runs, so a new miner's earnings can only be
estimated from miners like it. "Comparable" here means: the subnet's *earning miners* (active UIDs without a
validator permit whose incentive is above zero), and the new miner is placed at a configurable quantile of their
incentive (default: the median). Why:

- validators are paid dividends for weighting, not incentive for mining; counting them would mix two jobs;
- UIDs at zero incentive are idle keys, just-registered miners or miners about to be pruned; they say how a miner
  that does not do the subnet's work fares, which is not the question;
- the top of the distribution is held by miners tuned for months; a newcomer that runs the subnet's reference
  miner on hardware meeting the subnet's requirements (`SubnetProfile`) performs like a typical earner, so the
  median, and operators who want to be conservative lower the quantile (0.25 = a weak earner).

The revenue, per hour, of one node mining a subnet:

    miner pool per epoch   = sum(emission of earning miners) / sum(incentive of earning miners)
    miner emission / block = incentive at the quantile x miner pool per epoch / (tempo + 1)
    gross USD / hour       = miner emission / block x blocks per hour x alpha price in TAO x TAO price in USD
    registration USD / hour = burn (TAO) x TAO price in USD / amortisation horizon in hours
    net USD / hour         = gross - registration

The epoch of a subnet runs every tempo + 1 blocks (the chain's own schedule), and a UID's `emission` is what it
received in the last epoch, in the subnet's alpha token; alpha is priced in TAO by the subnet pool's reserves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ceti.networks.base import NetworkError, NodeClass, RevenueEstimate
from ceti.networks.bittensor.chain import Neuron, SubnetState

NETWORK = "bittensor"


@dataclass(frozen=True)
class EstimateSettings:
    miner_quantile: float = 0.5  # where among earning miners a new miner lands (0 = the weakest, 1 = the best)
    block_time_s: float = 12.0  # Bittensor's target block time
    registration_horizon_hours: float = 30 * 24.0  # the burn is spread over this much mining
    min_comparable_miners: int = 3  # fewer earning miners than this: no estimate, the sample says nothing
    max_tao_usd: float = 100_000.0  # a TAO price above this is a broken feed, not a market

    def __post_init__(self) -> None:
        if not 0.0 <= self.miner_quantile <= 1.0:
            raise NetworkError(f"miner_quantile {self.miner_quantile} must be between 0 and 1")
        if not self.block_time_s > 0:
            raise NetworkError(f"block_time_s {self.block_time_s} must be above zero")
        if not self.registration_horizon_hours > 0:
            raise NetworkError(f"registration_horizon_hours {self.registration_horizon_hours} must be above zero")
        if self.min_comparable_miners < 1:
            raise NetworkError("min_comparable_miners must be at least 1")

    @property
    def blocks_per_hour(self) -> float:
        return 3600.0 / self.block_time_s


@dataclass(frozen=True)
class SubnetProfile:
    """What a subnet's miner needs and how to start it. Subnets differ wildly (a text-prompting subnet wants an
    80 GB GPU, a storage subnet none), and the chain does not say, so the operator states it."""

    netuid: int
    min_gpus: int = 1
    min_vram_mib: int = 0
    gpu_models: tuple[str, ...] = ()  # allowed models; empty = any
    command: tuple[str, ...] = ()  # this subnet's miner command template; empty = the adapter's default
    cpus: int = 0  # CPUs the miner needs; 0 = the whole node
    memory_mib: int = 0  # memory the miner needs; 0 = the whole node

    def unmet_by(self, node: NodeClass) -> str | None:
        """Why `node` cannot mine this subnet, or None if it can."""
        if node.gpu_count < self.min_gpus:
            return f"needs {self.min_gpus} GPU(s), the node has {node.gpu_count}"
        if self.min_gpus and node.vram_mib < self.min_vram_mib:
            return f"needs {self.min_vram_mib} MiB of GPU memory, the node has {node.vram_mib}"
        if self.min_gpus and self.gpu_models and node.gpu_model not in self.gpu_models:
            return f"needs one of {', '.join(self.gpu_models)}, the node has {node.gpu_model}"
        if self.cpus and node.cpus < self.cpus:
            return f"needs {self.cpus} CPUs, the node has {node.cpus}"
        if self.memory_mib and node.memory_mib < self.memory_mib:
            return f"needs {self.memory_mib} MiB of memory, the node has {node.memory_mib}"
        return None


def comparable_miners(neurons: tuple[Neuron, ...] | list[Neuron]) -> list[Neuron]:
    return [n for n in neurons if n.active and not n.validator_permit and n.incentive > 0]


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (the usual definition, as numpy's default)."""
    if not values:
        raise ValueError("quantile of nothing")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def target_of(netuid: int) -> str:
    return f"subnet {netuid}"


def netuid_of(target: str) -> int:
    prefix = "subnet "
    if not target.startswith(prefix) or not target[len(prefix):].isdigit():
        raise NetworkError(f"{target!r} is not a Bittensor estimate target (expected 'subnet N')")
    return int(target[len(prefix):])


def estimate_subnet(state: SubnetState, tao_usd: float, settings: EstimateSettings) -> RevenueEstimate:
    """The estimate for one node mining `state`'s subnet; a `NetworkError` if the metagraph cannot support one."""
    miners = comparable_miners(state.neurons)
    if len(miners) < settings.min_comparable_miners:
        raise NetworkError(f"subnet {state.netuid} has {len(miners)} earning miner(s), fewer than the "
                           f"{settings.min_comparable_miners} needed to estimate what a new one would earn")
    incentive_sum = sum(n.incentive for n in miners)
    pool_per_epoch = sum(n.emission_per_epoch for n in miners) / incentive_sum
    incentive_q = quantile([n.incentive for n in miners], settings.miner_quantile)
    epoch_blocks = state.tempo_blocks + 1
    alpha_per_block = incentive_q * pool_per_epoch / epoch_blocks
    alpha_per_hour = alpha_per_block * settings.blocks_per_hour
    gross_usd = alpha_per_hour * state.alpha_price_tao * tao_usd
    registration_usd = state.burn_tao * tao_usd / settings.registration_horizon_hours
    net_usd = gross_usd - registration_usd
    return RevenueEstimate(
        network=NETWORK,
        usd_per_hour=net_usd,
        target=target_of(state.netuid),
        inputs={
            "netuid": state.netuid,
            "comparable_miners": len(miners),
            "miner_quantile": settings.miner_quantile,
            "incentive_at_quantile": incentive_q,
            "miner_pool_alpha_per_epoch": pool_per_epoch,
            "tempo_blocks": state.tempo_blocks,
            "alpha_per_block": alpha_per_block,
            "blocks_per_hour": settings.blocks_per_hour,
            "alpha_per_hour": alpha_per_hour,
            "alpha_price_tao": state.alpha_price_tao,
            "tao_usd": tao_usd,
            "gross_usd_per_hour": gross_usd,
            "registration_burn_tao": state.burn_tao,
            "registration_horizon_hours": settings.registration_horizon_hours,
            "registration_usd_per_hour": registration_usd,
        },
        detail=(f"incentive {incentive_q:.4g} (q{settings.miner_quantile:g} of {len(miners)} earning miners) x "
                f"{pool_per_epoch:.4g} alpha/epoch / {epoch_blocks} blocks x {settings.blocks_per_hour:g} blocks/h x "
                f"{state.alpha_price_tao:.4g} TAO/alpha x {tao_usd:g} USD/TAO - burn {state.burn_tao:g} TAO over "
                f"{settings.registration_horizon_hours:g} h = {net_usd:.4f} USD/h"),
    )
