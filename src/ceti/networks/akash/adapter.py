"""Akash as a demand source for the fabric: open orders priced for a class of node, the lease's job to run.

The adapter answers the fabric's questions with the provider-side pieces: `place_order` says whether one node
of the class can host an order, the pricing strategy and the provider's floor give the bid, and the bid in
the order's denom per block becomes USD per hour through the configured token price and block time (all shown
in the estimate's inputs). Where orders come from (a chain query, a test list) is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ceti.networks.akash.jobs import AkashJob
from ceti.networks.akash.market import FreeNode, Order, ProviderTerms
from ceti.networks.akash.pricing import Bid, DenomRates, PriceStrategy, decide_bid
from ceti.networks.base import HealthReport, NetworkAdapter, NetworkError, NodeClass, RevenueEstimate
from ceti.spec.job import JobSpec

OrderSource = Callable[[], Sequence[Order]]


class AkashAdapter(NetworkAdapter):
    name = "akash"

    def __init__(
        self,
        orders: OrderSource | Sequence[Order],
        pricing: PriceStrategy,
        rates: DenomRates,
        provider: ProviderTerms | None = None,
        manifests: dict[str, Sequence[AkashJob]] | None = None,
        storage_classes: frozenset[str] = frozenset(),
    ):
        self._orders = orders if callable(orders) else (lambda: list(orders))
        self.pricing = pricing
        self.rates = rates
        self.provider = provider or ProviderTerms()
        self.manifests = dict(manifests or {})  # order id -> the tenant's jobs, when known before the lease
        self.storage_classes = storage_classes

    def open_orders(self) -> list[Order]:
        try:
            return list(self._orders())
        except NetworkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a source that is down is bad input, not a crash
            raise NetworkError(f"cannot read open Akash orders: {exc}") from None

    def bid(self, order: Order, node: NodeClass) -> Bid | None:
        free = FreeNode.from_node_class(node, storage_classes=self.storage_classes)
        decision = decide_bid(order, [free], self.pricing, self.rates, self.provider)
        return decision if isinstance(decision, Bid) else None

    def estimate_revenue(self, node: NodeClass) -> list[RevenueEstimate]:
        estimates = []
        for order in self.open_orders():
            bid = self.bid(order, node)
            if bid is None:
                continue
            estimates.append(RevenueEstimate(
                network=self.name,
                usd_per_hour=bid.usd_per_hour,
                inputs=dict(bid.inputs),
                detail=bid.detail,
                target=order.order_id,
            ))
        estimates.sort(key=lambda e: (-e.usd_per_hour, e.target))
        return estimates

    def workload(self, node: NodeClass, estimate: RevenueEstimate) -> JobSpec:
        order = next((o for o in self.open_orders() if o.order_id == estimate.target), None)
        if order is None:
            raise NetworkError(f"Akash order {estimate.target!r} is no longer open")
        jobs = self.manifests.get(order.order_id)
        if not jobs:
            raise NetworkError(f"no manifest for Akash order {order.order_id!r} yet: the tenant sends it after "
                               "the lease is won")
        if order.replicas != 1 or len(jobs) != 1:
            raise NetworkError(f"Akash order {order.order_id!r} has {order.replicas} replicas; the fabric runs "
                               "multi-replica leases through the lease state machine, not as one node's workload")
        return jobs[0].to_job_spec(interruptible=True)

    def check_health(self, job_name: str, log_tail: str, exit_code: int | None) -> HealthReport:
        # An Akash service runs until its lease closes: a container that exited is not serving the lease.
        if exit_code is None:
            return HealthReport(True)
        return HealthReport(False, f"{job_name} exited with status {exit_code}; the lease expects it running")

    def capacity(self) -> int:
        return sum(order.replicas for order in self.open_orders())
