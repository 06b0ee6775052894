"""The provider's view of the Akash market: open orders and whether the fabric can host one.

An Akash deployment opens one order per placement group; the order lists resource units (the shape of one
replica, how many, and the most the tenant pays per block for each) plus placement requirements (attributes
the provider must have, auditors who must have signed them). A provider bids only on orders it can host
in full. Everything here is pure: free capacity comes in as plain values, nothing is queried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from ceti.networks.akash.jobs import AkashJob, GpuNeed, Volume, sdl_jobs
from ceti.networks.akash.sdl import Sdl
from ceti.networks.base import NetworkError, NodeClass


class ResourceUnit(BaseModel):
    """One replica shape of an order, `count` times, at most `price` per block each."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(..., description="the service the unit is for, when known")
    cpu_milli: int
    memory_mib: int
    storage: list[Volume] = Field(default_factory=list)
    gpu: GpuNeed = Field(default_factory=GpuNeed)
    global_endpoints: int = 0
    ip_endpoints: int = 0
    count: int = 1
    price: Decimal = Field(..., description="max per block for one replica, in the order's denom")


class Order(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: str = Field(..., description="owner/dseq/gseq/oseq on chain")
    group: str
    denom: str
    resources: list[ResourceUnit]
    attributes: dict[str, str] = Field(default_factory=dict)
    signed_by_all_of: list[str] = Field(default_factory=list)
    signed_by_any_of: list[str] = Field(default_factory=list)

    @property
    def max_price(self) -> Decimal:
        """The most the tenant pays per block for the whole group."""
        return sum((u.price * u.count for u in self.resources), Decimal(0))

    @property
    def replicas(self) -> int:
        return sum(u.count for u in self.resources)


def orders_from_sdl(sdl: Sdl, deployment_id: str = "local/1") -> list[Order]:
    """The orders an SDL opens: one per placement profile, as Akash groups them."""
    by_group: dict[str, list[AkashJob]] = {}
    for job in sdl_jobs(sdl):
        if job.replica == 0:
            by_group.setdefault(job.placement, []).append(job)
    orders = []
    for gseq, (group, jobs) in enumerate(sorted(by_group.items()), start=1):
        denoms = {job.max_price.denom for job in jobs}
        if len(denoms) > 1:
            raise NetworkError(f"placement {group!r} prices its profiles in several denoms ({', '.join(sorted(denoms))}):"
                               " an Akash group is paid in one")
        first = jobs[0]
        units = [
            ResourceUnit(
                name=job.service,
                cpu_milli=job.resources.cpu_milli,
                memory_mib=job.resources.memory_mib,
                storage=job.resources.storage,
                gpu=job.resources.gpu,
                global_endpoints=sum(1 for e in job.expose if e.global_ and not e.ip_endpoint),
                ip_endpoints=sum(1 for e in job.expose if e.ip_endpoint),
                count=job.count,
                price=job.max_price.amount,
            )
            for job in jobs
        ]
        orders.append(Order(
            order_id=f"{deployment_id}/{gseq}/1",
            group=group,
            denom=first.max_price.denom,
            resources=units,
            attributes=first.placement_attributes,
            signed_by_all_of=first.signed_by_all_of,
            signed_by_any_of=first.signed_by_any_of,
        ))
    return orders


@dataclass(frozen=True)
class FreeNode:
    """Capacity a node can give network work now. `floor_price_per_hour` is the provider's floor (USD per
    hour) for all of that capacity; a lease using part of it owes the floor pro rata."""

    node_id: str
    cpu_milli: int
    memory_mib: int
    disk_mib: int | None = None  # None: not known, not checked
    gpu_model: str | None = None
    gpu_count: int = 0
    vram_mib: int = 0
    floor_price_per_hour: float = 0.0
    storage_classes: frozenset[str] = frozenset()  # persistent storage classes offered (beta2, beta3, default)

    @classmethod
    def from_node_class(cls, node: NodeClass, node_id: str = "", disk_mib: int | None = None,
                        storage_classes: frozenset[str] = frozenset()) -> FreeNode:
        return cls(node_id=node_id or f"{node.gpu_model or 'cpu'}@{node.region}", cpu_milli=node.cpus * 1000,
                   memory_mib=node.memory_mib, disk_mib=disk_mib, gpu_model=node.gpu_model,
                   gpu_count=node.gpu_count, vram_mib=node.vram_mib,
                   floor_price_per_hour=node.floor_price_per_hour, storage_classes=storage_classes)


@dataclass(frozen=True)
class ProviderTerms:
    """What the provider advertises on chain: its attributes and the auditors who signed them."""

    attributes: dict[str, str] = field(default_factory=dict)
    audited_by: frozenset[str] = frozenset()
    ip_endpoints: int = 0  # leased IPs the provider can hand out


@dataclass(frozen=True)
class Placement:
    """Where each replica would run: (unit index, replica) -> node, and the floor it owes (USD per hour)."""

    nodes: dict[tuple[int, int], str]
    floor_usd_per_hour: float


@dataclass(frozen=True)
class NoFit:
    reason: str


def _requirements(order: Order, provider: ProviderTerms) -> str | None:
    for key, want in sorted(order.attributes.items()):
        have = provider.attributes.get(key)
        if have != want:
            return f"attribute {key}={want} required, provider has {key}={have}" if have else \
                f"attribute {key}={want} required, provider does not advertise {key}"
    missing = [a for a in order.signed_by_all_of if a not in provider.audited_by]
    if missing:
        return f"attributes must be signed by {', '.join(missing)}"
    if order.signed_by_any_of and not set(order.signed_by_any_of) & provider.audited_by:
        return "attributes must be signed by one of the order's auditors"
    if sum(u.ip_endpoints for u in order.resources) > provider.ip_endpoints:  # one leased IP serves all replicas
        return "the order needs leased IP endpoints the provider does not have"
    return None


def _fits(unit: ResourceUnit, node: FreeNode, left: dict[str, int]) -> bool:
    if unit.cpu_milli > left["cpu"] or unit.memory_mib > left["mem"]:
        return False
    disk = sum(v.size_mib for v in unit.storage if v.storage_class != "ram")
    if node.disk_mib is not None and disk > left["disk"]:
        return False
    if any(v.persistent and v.storage_class not in node.storage_classes for v in unit.storage):
        return False
    if unit.gpu.units:
        if node.gpu_model is None or unit.gpu.units > left["gpu"]:
            return False
        if unit.gpu.models and node.gpu_model not in unit.gpu.models:
            return False
        if node.vram_mib < unit.gpu.min_vram_mib:
            return False
    return True


def place_order(order: Order, nodes: list[FreeNode], provider: ProviderTerms | None = None) -> Placement | NoFit:
    """Whether the fabric can host every replica of the order, and where: each replica on one node, packed
    largest first (GPU replicas before CPU ones) onto the node that fits it most tightly."""
    problem = _requirements(order, provider or ProviderTerms())
    if problem:
        return NoFit(problem)
    left = {
        n.node_id: {"cpu": n.cpu_milli, "mem": n.memory_mib, "disk": n.disk_mib or 0, "gpu": n.gpu_count}
        for n in nodes
    }
    by_id = {n.node_id: n for n in nodes}
    replicas = [(i, r) for i, unit in enumerate(order.resources) for r in range(unit.count)]
    replicas.sort(key=lambda ir: (-order.resources[ir[0]].gpu.units, -order.resources[ir[0]].cpu_milli,
                                  -order.resources[ir[0]].memory_mib, ir))
    placed: dict[tuple[int, int], str] = {}
    for i, r in replicas:
        unit = order.resources[i]
        candidates = [n for n in nodes if _fits(unit, n, left[n.node_id])]
        if not candidates:
            return NoFit(f"no free node can take a replica of {unit.name!r} "
                         f"({unit.cpu_milli}m CPU, {unit.memory_mib} MiB, {unit.gpu.units} GPU)")
        # tightest fit: fewest GPUs left, then least CPU left; a CPU replica avoids GPU nodes when it can
        best = min(candidates, key=lambda n: (
            (by_id[n.node_id].gpu_count > 0) if not unit.gpu.units else 0,
            left[n.node_id]["gpu"] - unit.gpu.units,
            left[n.node_id]["cpu"] - unit.cpu_milli,
            n.node_id,
        ))
        rest = left[best.node_id]
        rest["cpu"] -= unit.cpu_milli
        rest["mem"] -= unit.memory_mib
        rest["disk"] -= sum(v.size_mib for v in unit.storage if v.storage_class != "ram")
        rest["gpu"] -= unit.gpu.units
        placed[(i, r)] = best.node_id
    return Placement(nodes=placed, floor_usd_per_hour=_floor(nodes, left))


def _floor(nodes: list[FreeNode], left: dict[str, dict[str, int]]) -> float:
    """The provider's floor owed: each used node's floor times the dominant share of its free capacity used."""
    total = 0.0
    for n in nodes:
        rest = left[n.node_id]
        shares = [
            (n.cpu_milli - rest["cpu"]) / n.cpu_milli if n.cpu_milli else 0.0,
            (n.memory_mib - rest["mem"]) / n.memory_mib if n.memory_mib else 0.0,
            (n.gpu_count - rest["gpu"]) / n.gpu_count if n.gpu_count else 0.0,
        ]
        total += n.floor_price_per_hour * max(shares)
    return total
