"""The fabric as an Akash provider, live: orders in, bids out, leases run as fabric jobs and stopped on close.

The chain itself is out of reach of the control plane, so the operator's bridge (a process that watches the
Akash chain with the provider's key) is the edge: it posts each open order, the lease when the tenant accepts
the bid (with the tenant's manifest, which Akash sends only then), and the close. Everything between is here:

- an order is matched against the capacity the fabric can give Akash now (online nodes whose provider allows
  `akash`, less what developer work and other leases hold there; back-filled miners and render workers yield,
  so they do not count), priced by the operator's strategy (scale prices or a bid price script), and bid on
  or declined with the reason (`networks/akash/pricing.py: decide_bid`);
- a won lease becomes one fabric job per replica, each pinned to the node the placement chose (or, when the
  capacity moved since the bid, to any Akash node), interruptible like all network work, tagged with the lease
  and the share of its price each replica earns;
- a closed lease cancels its jobs (SIGTERM and the grace period, as any cancel).

The lease's life is the pure state machine of `networks/akash/lease.py`; an event it does not allow is a 409
and changes nothing. Every call is idempotent: the same order, lease or close posted twice answers the same.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti.networks.akash.jobs import sdl_jobs
from ceti.networks.akash.lease import (
    BidDecided,
    BidLost,
    Lease,
    LeaseClosed,
    LeaseState,
    LeaseTransitionError,
    LeaseWon,
    RunJobs,
    StopJobs,
    advance,
)
from ceti.networks.akash.market import FreeNode, NoFit, Order, place_order
from ceti.networks.akash.pricing import Bid, decide_bid
from ceti.networks.akash.sdl import parse_sdl
from ceti.networks.base import NETWORK_ENV, REVENUE_ENV, NetworkError
from ceti.networks.config import AkashMarket
from ceti.server.errors import BadRequest, Conflict, NotFound
from ceti.server.services import jobs as job_service
from ceti.server.services.backfill import ACTIVE_ALLOCATIONS, ACTIVE_JOB_STATES, NETWORKS_PROJECT
from ceti.server.services.events import record
from ceti.server.services.tokens import Principal, ensure_project
from ceti.spec import JobSpec, NodeInfo
from ceti.store import models as m

AKASH = "akash"
LEASE_ENV = "FABRIC_AKASH_LEASE"
YIELDING_NETWORKS = ("bittensor", "render")  # back-fill that a lease may displace like any developer job


def free_nodes(s: Session, market: AkashMarket) -> list[FreeNode]:
    """What each Akash node can give a new lease now."""
    nodes: dict[str, NodeInfo] = {}
    for node_id, info_json in s.execute(select(m.Node.id, m.Node.info).where(m.Node.state == "online")
                                        .order_by(m.Node.id)):
        info = NodeInfo.model_validate(info_json)
        if AKASH in info.networks and info.container_engines:  # a lease's services are containers
            nodes[node_id] = info
    if not nodes:
        return []
    used = {node_id: {"cpu": 0, "mem": 0, "disk": 0, "gpu": 0} for node_id in nodes}

    def hold(node_id: str, spec: JobSpec) -> None:
        r = spec.resources
        u = used[node_id]
        u["cpu"] += r.cpu_milli
        u["mem"] += r.memory_mib
        u["disk"] += r.disk_mib
        u["gpu"] += r.gpus.count

    # leases hold their pinned node from the win on, running or not
    project = s.scalar(select(m.Project.id).where(m.Project.name == NETWORKS_PROJECT))
    lease_jobs: set[str] = set()
    if project is not None:
        for job_id, spec_json in s.execute(select(m.Job.id, m.Job.spec).where(
                m.Job.project_id == project, m.Job.state.in_(ACTIVE_JOB_STATES))):
            spec = JobSpec.model_validate(spec_json)
            pinned = spec.placement.nodes or []
            if spec.env.get(NETWORK_ENV) == AKASH:
                lease_jobs.add(job_id)
                if len(pinned) == 1 and pinned[0] in used:
                    hold(pinned[0], spec)
    # everything else running there, except back-fill that yields
    for node_id, job_id, spec_json in s.execute(
        select(m.Allocation.node_id, m.Job.id, m.Job.spec).join(m.Job, m.Job.id == m.Allocation.job_id).where(
            m.Allocation.node_id.in_(list(nodes)), m.Allocation.state.in_(ACTIVE_ALLOCATIONS))
    ):
        if job_id in lease_jobs:
            continue
        spec = JobSpec.model_validate(spec_json)
        if spec.env.get(NETWORK_ENV) in YIELDING_NETWORKS:
            continue
        hold(node_id, spec)
    free = []
    for node_id, info in nodes.items():
        u = used[node_id]
        gpus = info.gpus
        free.append(FreeNode(
            node_id=node_id,
            cpu_milli=max(0, info.cpus * 1000 - u["cpu"]),
            memory_mib=max(0, info.memory_mib - u["mem"]),
            disk_mib=max(0, info.disk_mib - u["disk"]) if info.disk_mib else None,
            gpu_model=gpus[0].model if gpus else None,
            gpu_count=max(0, len(gpus) - u["gpu"]),
            vram_mib=min((g.vram_mib for g in gpus), default=0),
            floor_price_per_hour=info.network_floor_usd_per_hour,
            storage_classes=market.storage_classes,
        ))
    return free


def _bid_json(bid: Bid) -> dict[str, Any]:
    return {
        "price_per_block": str(bid.price_per_block),
        "denom": bid.denom,
        "usd_per_hour": bid.usd_per_hour,
        "strategy": bid.strategy,
        "detail": bid.detail,
        "inputs": bid.inputs,
        "nodes": {f"{unit}/{replica}": node for (unit, replica), node in sorted(bid.placement.nodes.items())},
    }


def receive_order(s: Session, market: AkashMarket, order: Order, now: float) -> m.AkashLease:
    """Bid on an open order, or decline it with the reason. The same order posted again answers the same."""
    row = s.get(m.AkashLease, order.order_id)
    doc = order.model_dump(mode="json")
    if row is not None:
        if row.order != doc:
            raise Conflict(f"order {order.order_id} was posted before with other terms")
        return row
    decision = decide_bid(order, free_nodes(s, market), market.pricing, market.rates, market.provider)
    lease, _ = advance(Lease(order=order), BidDecided(decision))
    row = m.AkashLease(order_id=order.order_id, state=lease.state.value, order=doc, lease_id=None, job_ids=[],
                       reason=lease.reason, created_at=now, updated_at=now)
    if isinstance(decision, Bid):
        row.bid, row.usd_per_hour = _bid_json(decision), decision.usd_per_hour
        record(s, "akash_bid", now, f"order {order.order_id}: bid {decision.detail}"[:500])
    else:
        record(s, "akash_declined", now, f"order {order.order_id}: {decision.reason}"[:500])
    s.add(row)
    s.flush()
    return row


def _lease_of(row: m.AkashLease) -> Lease:
    return Lease(order=Order.model_validate(row.order), state=LeaseState(row.state), lease_id=row.lease_id,
                 reason=row.reason)


def _row(s: Session, order_id: str) -> m.AkashLease:
    row = s.get(m.AkashLease, order_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no Akash order {order_id}")
    return row


def lease_won(s: Session, market: AkashMarket, order_id: str, lease_id: str, manifest_sdl: str, now: float
              ) -> m.AkashLease:
    """The tenant accepted the bid: run the manifest's replicas as fabric jobs."""
    row = _row(s, order_id)
    if row.state == LeaseState.active.value and row.lease_id == lease_id:
        return row
    order = Order.model_validate(row.order)
    try:
        sdl = parse_sdl(manifest_sdl, file="manifest")
        manifest = tuple(j for j in sdl_jobs(sdl) if j.placement == order.group)
        lease, actions = advance(_lease_of(row), LeaseWon(lease_id, manifest))
    except LeaseTransitionError as exc:
        raise Conflict(str(exc)) from None
    except NetworkError as exc:  # an SDL error names the YAML path and line
        raise BadRequest(str(exc)) from None
    run = next(a for a in actions if isinstance(a, RunJobs))
    free = free_nodes(s, market)
    placement = place_order(order, free, market.provider)
    akash_nodes = [n.node_id for n in free]
    if not akash_nodes:
        raise Conflict("no online node offers Akash capacity now; the lease cannot run")
    unit_of = {u.name: i for i, u in enumerate(order.resources)}
    share = (row.usd_per_hour or 0.0) / max(1, len(run.jobs))
    project = ensure_project(s, NETWORKS_PROJECT, now)
    who = Principal(token_id="fabric-akash", kind="project", project_id=project.id)
    job_ids = []
    for spec, replica in zip(run.jobs, manifest, strict=True):
        if isinstance(placement, NoFit):
            nodes = akash_nodes  # the capacity moved since the bid: any Akash node, when one frees up
        else:
            nodes = [placement.nodes[(unit_of[replica.service], replica.replica)]]
        doc = spec.model_dump(mode="json")
        doc["env"] = {**doc["env"], LEASE_ENV: lease_id, REVENUE_ENV: f"{share:.6f}"}
        doc["placement"] = {**doc["placement"], "nodes": nodes, "verified": False}
        job, _ = job_service.submit(s, who, JobSpec.model_validate(doc), now,
                                    idempotency_key=f"akash:{lease_id}:{spec.name}"[:200], max_active_jobs=1_000_000)
        job_ids.append(job.id)
    row.state, row.lease_id, row.job_ids, row.reason, row.updated_at = (
        lease.state.value, lease_id, job_ids, "", now)
    record(s, "akash_lease", now, f"order {order_id}: lease {lease_id} won, {len(job_ids)} job(s)")
    return row


def bid_lost(s: Session, order_id: str, reason: str, now: float) -> m.AkashLease:
    row = _row(s, order_id)
    if row.state == LeaseState.lost.value:
        return row
    try:
        lease, _ = advance(_lease_of(row), BidLost(reason or "another provider won"))
    except LeaseTransitionError as exc:
        raise Conflict(str(exc)) from None
    row.state, row.reason, row.updated_at = lease.state.value, lease.reason, now
    return row


def lease_closed(s: Session, order_id: str, reason: str, now: float) -> m.AkashLease:
    """The lease (or the order, before a lease) closed: stop every job it runs."""
    row = _row(s, order_id)
    if row.state in (LeaseState.closed.value, LeaseState.lost.value):
        return row
    try:
        lease, actions = advance(_lease_of(row), LeaseClosed(reason or "closed by the tenant"))
    except LeaseTransitionError as exc:
        raise Conflict(str(exc)) from None
    if any(isinstance(a, StopJobs) for a in actions):
        admin = Principal(token_id="fabric-akash", kind="admin")
        for job_id in row.job_ids:
            job_service.cancel(s, admin, job_id, now)
        record(s, "akash_closed", now, f"order {order_id}: lease {row.lease_id} closed ({lease.reason}); "
                                       f"{len(row.job_ids)} job(s) stopped"[:500])
    row.state, row.reason, row.updated_at = lease.state.value, lease.reason, now
    return row


def list_leases(s: Session, state: str | None = None, limit: int = 100) -> list[m.AkashLease]:
    q = select(m.AkashLease).order_by(m.AkashLease.updated_at.desc()).limit(limit)
    if state:
        q = q.where(m.AkashLease.state == state)
    return list(s.scalars(q))


def lease_out(row: m.AkashLease) -> dict[str, Any]:
    return {"order_id": row.order_id, "state": row.state, "reason": row.reason, "bid": row.bid,
            "usd_per_hour": row.usd_per_hour, "lease_id": row.lease_id, "job_ids": list(row.job_ids),
            "created_at": row.created_at, "updated_at": row.updated_at,
            "replicas": sum(u["count"] for u in row.order.get("resources", []))}


def orders_of(body: dict[str, Any]) -> list[Order]:
    """The orders a request names: one `order` as the chain shows it, or the orders an `sdl` opens."""
    from ceti.networks.akash.market import orders_from_sdl

    if body.get("order") is not None:
        return [Order.model_validate(body["order"])]
    sdl = parse_sdl(body["sdl"], file="sdl")
    return orders_from_sdl(sdl, body.get("deployment_id") or "local/1")

