"""The life of one Akash order on the provider side, as a small pure state machine.

    open --bid--> bid_placed --won--> active --closed--> closed
      |               |                                   ^
      +--decline--> declined   +--lost / order closed--> lost

Each transition returns the actions the fabric must take: winning a lease (with the tenant's manifest, which
Akash sends only after the lease exists) yields the jobs to run; closing an active lease yields the jobs to
stop. An event that makes no sense in the current state is an error, and the lease is left as it was.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from ceti.networks.akash.jobs import AkashJob
from ceti.networks.akash.market import Order
from ceti.networks.akash.pricing import Bid, NoBid
from ceti.networks.base import NetworkError
from ceti.spec.job import JobSpec


class LeaseState(str, enum.Enum):
    open = "open"
    bid_placed = "bid_placed"
    declined = "declined"
    lost = "lost"
    active = "active"
    closed = "closed"


class LeaseTransitionError(NetworkError):
    pass


@dataclass(frozen=True)
class BidDecided:
    decision: Bid | NoBid


@dataclass(frozen=True)
class BidLost:
    reason: str = "another provider won"


@dataclass(frozen=True)
class LeaseWon:
    lease_id: str
    manifest: tuple[AkashJob, ...]


@dataclass(frozen=True)
class LeaseClosed:
    reason: str = "closed by the tenant"


Event = BidDecided | BidLost | LeaseWon | LeaseClosed


@dataclass(frozen=True)
class RunJobs:
    lease_id: str
    jobs: tuple[JobSpec, ...]


@dataclass(frozen=True)
class StopJobs:
    lease_id: str
    job_names: tuple[str, ...]
    reason: str


Action = RunJobs | StopJobs


@dataclass(frozen=True)
class Lease:
    order: Order
    state: LeaseState = LeaseState.open
    bid: Bid | None = None
    lease_id: str | None = None
    job_names: tuple[str, ...] = ()
    reason: str = ""


def advance(lease: Lease, event: Event) -> tuple[Lease, list[Action]]:
    """The next state of the lease and the actions it asks for."""
    state = lease.state
    if isinstance(event, BidDecided) and state is LeaseState.open:
        if isinstance(event.decision, NoBid):
            return replace(lease, state=LeaseState.declined, reason=event.decision.reason), []
        return replace(lease, state=LeaseState.bid_placed, bid=event.decision), []
    if isinstance(event, BidLost) and state is LeaseState.bid_placed:
        return replace(lease, state=LeaseState.lost, reason=event.reason), []
    if isinstance(event, LeaseWon) and state is LeaseState.bid_placed:
        _check_manifest(lease.order, event.manifest)
        jobs = tuple(job.to_job_spec() for job in event.manifest)
        lease_part = re.sub(r"[^a-zA-Z0-9._-]", "-", event.lease_id)
        names = tuple(f"akash-{lease_part}-{job.name}"[:63] for job in jobs)
        jobs = tuple(job.model_copy(update={"name": name}) for job, name in zip(jobs, names, strict=True))
        won = replace(lease, state=LeaseState.active, lease_id=event.lease_id, job_names=names)
        return won, [RunJobs(event.lease_id, jobs)]
    if isinstance(event, LeaseClosed) and state is LeaseState.active:
        assert lease.lease_id is not None
        closed = replace(lease, state=LeaseState.closed, reason=event.reason)
        return closed, [StopJobs(lease.lease_id, lease.job_names, event.reason)]
    if isinstance(event, LeaseClosed) and state is LeaseState.bid_placed:
        return replace(lease, state=LeaseState.lost, reason=f"order closed before a lease: {event.reason}"), []
    raise LeaseTransitionError(f"order {lease.order.order_id}: {type(event).__name__} is not possible in state "
                               f"{state.value}")


def _check_manifest(order: Order, manifest: tuple[AkashJob, ...]) -> None:
    """The manifest must be what the order paid for: the same services, replicas and shapes."""
    want = sorted((u.name, u.cpu_milli, u.memory_mib, u.gpu.units, u.count) for u in order.resources)
    counts: dict[str, int] = {}
    shapes: dict[str, tuple[int, int, int]] = {}
    for job in manifest:
        counts[job.service] = counts.get(job.service, 0) + 1
        shapes[job.service] = (job.resources.cpu_milli, job.resources.memory_mib, job.resources.gpu.units)
    got = sorted((svc, *shapes[svc], n) for svc, n in counts.items())
    if got != want:
        raise LeaseTransitionError(f"order {order.order_id}: the manifest does not match the order's resources")
