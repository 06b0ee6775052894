"""Render Network as a demand source: render frames on idle GPUs, paid per OctaneBench-hour."""

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
from ceti.networks.price import DEFAULT_TIMEOUT_S, PriceSource, read_price
from ceti.networks.render.jobs import DEFAULT_COMMAND, RenderJob, check_command, render_command
from ceti.networks.render.pricing import NETWORK, TIERS, check_obh_rate, estimate_node, tier, unmet_minimum
from ceti.spec.job import JobSpec, RetryOn, RetryPolicy

NETWORK_WORK_PRIORITY = 10  # below every developer job's default (50): paying work always displaces it
MAX_RENDER_TOKEN_USD = 10_000.0

_BLENDER_ERROR = re.compile(r"^(Error: .*|.*Cannot read file.*|.*Unable to open.*)$", re.MULTILINE)


@dataclass
class RenderConfig:
    """The operator's side of Render.

    The OBh rate of a tier is either stated (`obh_rate_usd`, USD per OBh) or derived from the RENDER token's price
    (`token_price`, USD per token) and the tier's OBh per credit. `measured_scores` maps a GPU model to the
    OctaneBench score the operator measured for one such GPU; it wins over the data file.
    """

    obh_rate_usd: Mapping[str, float] = field(default_factory=dict)
    token_price: PriceSource | None = None
    priority_admitted: bool = False
    measured_scores: Mapping[str, float] = field(default_factory=dict)
    command: Sequence[str] = DEFAULT_COMMAND
    price_timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        for name, rate in self.obh_rate_usd.items():
            tier(name)
            check_obh_rate(rate, f"{name} OBh rate")
        if not self.obh_rate_usd and self.token_price is None:
            raise NetworkError("Render needs an OBh rate per tier or a RENDER token price source")
        self.command = check_command(self.command)


class RenderAdapter(NetworkAdapter):
    """Prices nodes by benchmark and runs the jobs the network has handed this operator (`jobs`, in order)."""

    name = NETWORK

    def __init__(self, config: RenderConfig, jobs: Sequence[RenderJob] = ()):
        self.config = config
        self.jobs = list(jobs)

    def obh_rate(self, tier_name: str) -> float:
        chosen = tier(tier_name)
        if tier_name in self.config.obh_rate_usd:
            return self.config.obh_rate_usd[tier_name]
        if self.config.token_price is None:
            raise NetworkError(f"no OBh rate configured for the {tier_name} tier")
        token_usd = read_price(self.config.token_price, "RENDER price", MAX_RENDER_TOKEN_USD,
                               self.config.price_timeout_s)
        return check_obh_rate(token_usd / chosen.obh_per_credit, f"{tier_name} OBh rate")

    def tiers_for(self, node: NodeClass) -> list[str]:
        if unmet_minimum(node):
            return []
        return [t.name for t in TIERS.values() if not t.needs_admission or self.config.priority_admitted]

    def estimate(self, node: NodeClass, tier_name: str) -> RevenueEstimate:
        measured = self.config.measured_scores.get(node.gpu_model or "")
        return estimate_node(node, self.obh_rate(tier_name), tier_name, measured)

    def estimate_revenue(self, node: NodeClass) -> list[RevenueEstimate]:
        """One estimate per tier the node can serve, best first; empty for a node below the network's minimum
        or with neither a measured score nor one on file."""
        out = []
        for tier_name in self.tiers_for(node):
            try:
                estimate = self.estimate(node, tier_name)
            except NetworkError as exc:
                if "OctaneBench score" in str(exc):
                    return []  # the node cannot be priced at any tier
                raise  # a bad rate or price source: no estimate at all, said loudly
            if estimate.usd_per_hour > max(node.floor_price_per_hour, 0.0):
                out.append(estimate)
        out.sort(key=lambda e: -e.usd_per_hour)
        return out

    def next_job(self, tier_name: str) -> RenderJob:
        for job in self.jobs:
            if job.tier == tier_name:
                return job
        raise NetworkError(f"no {tier_name} render job is waiting")

    def workload(self, node: NodeClass, estimate: RevenueEstimate, job: RenderJob | None = None) -> JobSpec:
        if estimate.network != NETWORK:
            raise NetworkError(f"an estimate for {estimate.network!r} cannot start a render")
        job = job or self.next_job(estimate.target)
        return JobSpec(
            name=f"render-{job.job_id}"[:63],
            command=render_command(job, self.config.command),
            env={NETWORK_ENV: "render"},
            resources={
                "cpus": max(node.cpus, 1),
                "memory": max(node.memory_mib, 512),
                "gpus": {"count": node.gpu_count, "models": [node.gpu_model] if node.gpu_model else []},
            },
            priority=NETWORK_WORK_PRIORITY,
            interruptible=True,
            retry=RetryPolicy(limit=10, on=[RetryOn.preemption, RetryOn.node_lost]),
        )

    def check_health(self, job_name: str, log_tail: str, exit_code: int | None) -> HealthReport:
        # Blender can print an error and still exit 0 (an unreadable scene, a missing denoiser): read the log too
        match = _BLENDER_ERROR.search(log_tail or "")
        if match:
            return HealthReport(False, f"{job_name}: the renderer reports {match.group(0).strip()!r}")
        if exit_code not in (None, 0):
            return HealthReport(False, f"{job_name}: the renderer exited with code {exit_code}")
        if exit_code == 0:
            return HealthReport(True, "finished")
        return HealthReport(True)

    def workload_for_slot(self, node: NodeClass, estimate: RevenueEstimate, slot: int) -> JobSpec:
        """Slot i renders the i-th waiting job (if it is of the estimate's tier)."""
        if not 0 <= slot < len(self.jobs):
            raise NetworkError(f"slot {slot} has no render job (jobs waiting: {len(self.jobs)})")
        job = self.jobs[slot]
        if job.tier != estimate.target:
            raise NetworkError(f"render job {job.job_id} is for the {job.tier} tier, not {estimate.target}")
        return self.workload(node, estimate, job)

    def capacity(self) -> int:
        """One node per waiting job."""
        return len(self.jobs)
