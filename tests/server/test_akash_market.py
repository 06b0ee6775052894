"""The fabric as a live Akash provider, through its service on SQLite and PostgreSQL: orders bid on or declined
against the capacity Akash nodes have now, a won lease run as pinned jobs, a close stopping them, and every bad
event refused without a change."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ceti.networks.akash.market import ProviderTerms
from ceti.networks.akash.pricing import DenomRates, ScalePricing
from ceti.networks.base import NetworkError
from ceti.networks.config import AkashMarket, load_akash_market
from ceti.server.errors import BadRequest, Conflict, NotFound
from ceti.server.services import agents, akash_market, ledger, scheduling
from ceti.server.settings import Settings
from ceti.spec import JobSpec, NodeInfo
from ceti.store import models as m

SDL = """
version: "2.0"
services:
  web:
    image: localhost/ceti-busybox:test
    command: ["/bin/sh", "-c"]
    args: ["echo serving; sleep 3600"]
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu: {units: 1.5}
        memory: {size: 256Mi}
        storage: [{size: 512Mi}]
  placement:
    dc:
      attributes: {region: eu-west}
      pricing:
        web: {denom: uakt, amount: 1000}
deployment:
  web:
    dc:
      profile: web
      count: 2
"""
MARKET = AkashMarket(
    pricing=ScalePricing(cpu_per_millicore=0.00002, memory_per_gib=0.002),
    rates=DenomRates(usd_per_token={"uakt": 3.0}, block_time_s=6.0),
    provider=ProviderTerms(attributes={"region": "eu-west"}),
)


def node(s, who, name: str, networks=("akash",), engines=("podman",), cpus: int = 2) -> str:
    info = NodeInfo(hostname=name, cpus=cpus, memory_mib=4096, disk_mib=20_000, networks=list(networks),
                    container_engines=list(engines))
    return agents.register(s, who, info, None, 0.0).id


def offer(s, deployment: str = "alice/7"):
    (order,) = akash_market.orders_of({"sdl": SDL, "deployment_id": deployment})
    return akash_market.receive_order(s, MARKET, order, 1.0)


def test_an_order_is_bid_on_once_within_its_max_and_placed_on_akash_nodes(db):
    sessions, who = db
    with sessions() as s:
        a, b = node(s, who, "a"), node(s, who, "b")
        node(s, who, "no-akash", networks=("render",))
        node(s, who, "no-engine", engines=())
        row = offer(s)
        s.commit()
        assert row.order_id == "alice/7/1/1" and row.state == "bid_placed", row.reason
        bid = row.bid
        assert bid["denom"] == "uakt" and 0 < float(bid["price_per_block"]) <= 2000
        # 2 x (1,500 m CPU x 0.00002 + 0.25 GiB x 0.002) USD/h = 0.061 USD/h
        assert row.usd_per_hour == pytest.approx(0.061, rel=1e-3)
        assert sorted(bid["nodes"].values()) == sorted([a, b])  # 1.5 CPUs each: one replica per 2-CPU node
        again = offer(s)
        assert again.order_id == row.order_id and again.bid == bid and s.scalar(
            select(m.Event.id).where(m.Event.kind == "akash_bid").limit(1).offset(1)) is None
        (changed,) = akash_market.orders_of({"sdl": SDL.replace("amount: 1000", "amount: 900"),
                                             "deployment_id": "alice/7"})
        with pytest.raises(Conflict, match="other terms"):
            akash_market.receive_order(s, MARKET, changed, 2.0)


def test_an_order_the_capacity_cannot_hold_is_declined_with_the_reason(db):
    sessions, who = db
    with sessions() as s:
        node(s, who, "small", cpus=1)
        node(s, who, "plain", networks=())
        row = offer(s)
        assert row.state == "declined" and "no free node can take a replica of 'web'" in row.reason
        assert row.bid is None and row.usd_per_hour is None
        far = MARKET.__class__(MARKET.pricing, MARKET.rates, ProviderTerms(attributes={"region": "us-east"}))
        (order,) = akash_market.orders_of({"sdl": SDL, "deployment_id": "bob/1"})
        assert "region=eu-west required" in akash_market.receive_order(s, far, order, 1.0).reason


def test_a_won_lease_runs_pinned_jobs_and_holds_their_capacity_until_closed(db):
    sessions, who = db
    with sessions() as s:
        a, b = node(s, who, "a"), node(s, who, "b")
        row = offer(s)
        won = akash_market.lease_won(s, MARKET, row.order_id, "alice/7/1/1/prov1", SDL, 2.0)
        s.commit()
        assert won.state == "active" and len(won.job_ids) == 2
        jobs = [s.get(m.Job, j) for j in won.job_ids]
        specs = [JobSpec.model_validate(j.spec) for j in jobs]
        assert sorted(sp.placement.nodes[0] for sp in specs) == sorted([a, b])
        assert all(sp.env["FABRIC_AKASH_LEASE"] == "alice/7/1/1/prov1" and sp.env["FABRIC_NETWORK"] == "akash"
                   and sp.interruptible and sp.image == "localhost/ceti-busybox:test" for sp in specs)
        assert sum(float(sp.env["FABRIC_NETWORK_USD_PER_HOUR"]) for sp in specs) == pytest.approx(0.061, rel=1e-3)
        # posting the lease again changes nothing
        assert akash_market.lease_won(s, MARKET, row.order_id, "alice/7/1/1/prov1", SDL, 3.0).job_ids == won.job_ids

        # the lease's replicas hold the capacity: a second order like it finds none
        assert offer(s, "carol/9").state == "declined"

        settings = Settings()
        settings.verify.enabled = False
        scheduling.run_round(s, settings, 4.0)
        s.commit()
        placed = {al.job_id: al for al in s.scalars(select(m.Allocation))}
        assert {placed[j.id].node_id for j in jobs} == {a, b}

        # the lease's price is booked as the network's payment: 90 % to the provider, the fee to the fabric
        for job in jobs:
            al = placed[job.id]
            agents.heartbeat(s, who, al.node_id, [al.id], [], settings, 10.0)
        s.commit()
        ledger.meter(s, 10.0 + 3600, settings)
        balances = {(acc.kind, acc.owner_id): acc.balance_micro for acc in s.scalars(select(m.LedgerAccount))}
        networks = s.scalar(select(m.Project.id).where(m.Project.name == "fabric-networks"))
        assert balances[("project", networks)] == -61_000  # 0.061 USD for the hour, both replicas
        assert balances[("provider", who.provider_id)] == 54_900 and balances[("fabric", "fabric")] == 6_100

        closed = akash_market.lease_closed(s, row.order_id, "tenant closed the deployment", 5.0)
        s.commit()
        assert closed.state == "closed" and closed.reason == "tenant closed the deployment"
        assert {al.stop_reason for al in s.scalars(select(m.Allocation))} == {"cancelled"}
        assert akash_market.lease_closed(s, row.order_id, "again", 6.0).reason == "tenant closed the deployment"
        with pytest.raises(Conflict, match="not possible in state closed"):
            akash_market.lease_won(s, MARKET, row.order_id, "other-lease", SDL, 7.0)


def test_bad_events_are_refused_and_change_nothing(db):
    sessions, who = db
    with sessions() as s:
        node(s, who, "a"), node(s, who, "b")
        row = offer(s)
        s.commit()
        with pytest.raises(NotFound):
            akash_market.lease_won(s, MARKET, "nobody/1/1/1", "l", SDL, 2.0)
        with pytest.raises(BadRequest, match=r"manifest: .*services"):
            akash_market.lease_won(s, MARKET, row.order_id, "l1", "version: '2.0'\nservices: 7\n", 2.0)
        with pytest.raises(Conflict, match="does not match the order"):
            akash_market.lease_won(s, MARKET, row.order_id, "l1", SDL.replace("count: 2", "count: 3"), 2.0)
        with pytest.raises(NotFound):
            akash_market.bid_lost(s, "x/1/1/1", "", 2.0)
    with sessions() as s:
        row = s.get(m.AkashLease, "alice/7/1/1")
        assert row.state == "bid_placed" and row.job_ids == [] and s.scalar(select(m.Job.id)) is None
        lost = akash_market.bid_lost(s, row.order_id, "", 3.0)
        assert lost.state == "lost" and lost.reason == "another provider won"
        with pytest.raises(Conflict, match="not possible in state lost"):
            akash_market.lease_won(s, MARKET, row.order_id, "l2", SDL, 4.0)
        # an order that closes before any lease is lost too, with the reason
        early = offer(s, "dave/3")
        gone = akash_market.lease_closed(s, early.order_id, "deployment closed", 5.0)
        assert gone.state == "lost" and "order closed before a lease: deployment closed" in gone.reason


def test_operator_configuration_of_the_market(tmp_path: Path):
    path = tmp_path / "networks.yaml"
    path.write_text("akash:\n  usd_per_token: {uakt: 3.1}\n  pricing:\n    scale: {cpu_per_millicore: 0.00002, "
                    "gpu_per_hour: {H100-80GB: 2.5}}\n  attributes: {region: eu-west}\n")
    market = load_akash_market(path)
    assert market.rates.blocks_per_hour == 600 and market.provider.attributes == {"region": "eu-west"}
    assert market.pricing.gpu_per_hour == {"H100-80GB": 2.5}
    path.write_text("render: {}\n")
    assert load_akash_market(path) is None
    for bad, words in [
        ("akash:\n  usd_per_token: {uakt: 3.1}\n  pricing: {scale: {}, script: [x]}\n", "exactly one of scale"),
        ("akash:\n  usd_per_token: {uakt: -1}\n  pricing: {scale: {}}\n", "USD price of uakt"),
        ("akash:\n  usd_per_token: {uakt: 3}\n  pricing: {scale: {cpu_per_millicore: -1}}\n", "greater than or equal"),
        ("akash:\n  pricing: {scale: {}}\n", "akash.usd_per_token"),
    ]:
        path.write_text(bad)
        with pytest.raises(NetworkError, match=words):
            load_akash_market(path)
