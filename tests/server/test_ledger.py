"""The ledger: balanced postings, prices within bid and ask, idempotent metering, budgets, scoping and bad input.

The app runs in-process; the clock is passed in: heartbeats, scheduling rounds and metering passes are driven
through the services with explicit times, while tokens, budgets, submits and reports go through the REST API.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ceti.server.app import create_app
from ceti.server.services import agents, jobs, ledger, lost_nodes, scheduling
from ceti.server.services.agents import Finished
from ceti.server.services.tokens import (
    Principal,
    authenticate,
    bootstrap_admin,
    ensure_project,
    ensure_provider,
)
from ceti.server.settings import LedgerSettings, Settings, VerifySettings
from ceti.spec import AllocationState, GPUInfo, NodeInfo, parse_job_spec
from ceti.store import models as m
from ceti.store.db import make_engine, migrate, session_factory
from tests.dashboard.inprocess import Plane

T0 = float(int(time.time()))  # the tests' clock starts here; every later time is T0 + seconds
HOUR_MICRO = 1_000_000  # $1 in micro-USD


class Fabric:
    """The plane plus the service-level controls a test needs, with the clock in the test's hands."""

    def __init__(self, p: Plane):
        self.p = p
        self.app = p.http.app
        self.settings: Settings = self.app.state.settings

    def session(self):
        return self.app.state.sessions()

    def provider(self, name: str) -> tuple[str, Principal]:
        token = self.p.token("provider", provider=name)
        with self.session() as s:
            return token, authenticate(s, token)

    def node(self, token: str, host: str, gpus: int = 1, gpu_price: float = 2.0, cpu_price: float = 0.0) -> str:
        info = NodeInfo(hostname=host, cpus=8, memory_mib=32768, price_per_gpu_hour=gpu_price,
                        price_per_cpu_hour=cpu_price,
                        gpus=[GPUInfo(index=i, model="A100-80GB", vram_mib=81920) for i in range(gpus)])
        return self.p.ok("POST", "/v1/agent/register", token, json={"info": info.model_dump(mode="json")})["node_id"]

    def submit(self, token: str | None = None, **spec) -> str:
        body = {"command": ["sleep", "1"], "resources": {"gpus": 1, "cpus": 1}, **spec}
        return self.p.ok("POST", "/v1/jobs", token, json=body)["id"]

    def tick(self, t: float):
        """One sweep (lost nodes, then a metering pass) and one scheduling round, as the server's loops run them."""
        with self.session() as s:
            lost_nodes.sweep(s, self.settings, T0 + t)
            report = ledger.meter(s, T0 + t, self.settings)
            scheduling.run_round(s, self.settings, T0 + t)
            s.commit()
        return report

    def meter(self, t: float) -> ledger.MeterReport:
        with self.session() as s:
            report = ledger.meter(s, T0 + t, self.settings)
            s.commit()
        return report

    def heartbeat(self, who: Principal, node_id: str, t: float, finished: list[Finished] = ()):
        with self.session() as s:
            running = [a.id for a in s.scalars(select(m.Allocation).where(
                m.Allocation.node_id == node_id, m.Allocation.state == "assigned"))]
            answer = agents.heartbeat(s, who, node_id, running, list(finished), self.settings, T0 + t)
            s.commit()
        return answer

    def alloc_of(self, job_id: str) -> m.Allocation:
        with self.session() as s:
            return s.scalars(select(m.Allocation).where(m.Allocation.job_id == job_id)
                             .order_by(m.Allocation.created_at.desc())).first()

    def job(self, job_id: str) -> m.Job:
        with self.session() as s:
            return s.get(m.Job, job_id)

    def balances(self) -> dict[tuple[str, str], int]:
        with self.session() as s:
            return {(a.kind, a.owner_id): a.balance_micro for a in s.scalars(select(m.LedgerAccount))}

    def entries(self) -> list[m.LedgerEntry]:
        with self.session() as s:
            return list(s.scalars(select(m.LedgerEntry).order_by(m.LedgerEntry.id)))


@contextmanager
def fabric(tmp: Path, interval_s: float = 600.0, fee_bps: int = 1000, lost_after_s: float = 1e9):
    settings = Settings(data_dir=tmp / "server", database_url=None, verify=VerifySettings(enabled=False),
                        ledger=LedgerSettings(meter_interval_s=interval_s, fee_bps=fee_bps),
                        node_lost_after_s=lost_after_s)
    app = create_app(settings, admin_token_file=tmp / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Fabric(Plane(client, (tmp / "admin-token").read_text().strip()))


def assert_books_balance(f: Fabric) -> None:
    by_txn: dict[str, int] = defaultdict(int)
    by_account: dict[int, int] = defaultdict(int)
    for e in f.entries():
        assert isinstance(e.amount_micro, int)
        by_txn[e.txn_id] += e.amount_micro
        by_account[e.account_id] += e.amount_micro
    assert all(total == 0 for total in by_txn.values()), by_txn
    with f.session() as s:
        for a in s.scalars(select(m.LedgerAccount)):
            assert a.balance_micro == by_account.get(a.id, 0), (a.kind, a.owner_id)
        assert sum(ledger.totals_by_kind(s).values()) == 0


def run_to_exit(f: Fabric, who: Principal, node_id: str, job_id: str, start: float, end: float, step: float):
    """Place the job, report it running at `start`, tick every `step`, report its exit at `end`."""
    f.tick(start - 1)
    f.heartbeat(who, node_id, start)
    assert f.job(job_id).state == "running"
    t = start
    while t + step < end:
        t += step
        f.heartbeat(who, node_id, t)
        f.tick(t)
    alloc = f.alloc_of(job_id)
    f.heartbeat(who, node_id, end, [Finished(alloc.id, 0)])
    f.tick(end)
    return alloc.id


# -- prices ----------------------------------------------------------------------------------------


def test_a_job_pays_at_most_its_bid_and_the_provider_at_least_its_ask(tmp_path):
    with fabric(tmp_path, interval_s=600.0, fee_bps=1000) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=2.0, cpu_price=0.1)
        dev = f.p.token("project", project="research")
        # ask for 1 GPU + 1 CPU = $2.10/h; +10% fee would be $2.31/h, above the bid: the fee is cut to fit
        job = f.submit(dev, max_price_per_hour=2.15)
        run_to_exit(f, prov, node, job, start=100, end=100 + 3600, step=300)
        assert f.job(job).state == "succeeded"
        assert_books_balance(f)
        with f.session() as s:
            project_id = s.scalar(select(m.Project.id).where(m.Project.name == "research"))
            provider_id = s.scalar(select(m.Provider.id).where(m.Provider.name == "acme"))
        books = f.balances()
        charged, earned, fee = -books[("project", project_id)], books[("provider", provider_id)], books[
            ("fabric", "fabric")]
        assert charged == 2_150_000 <= 2.15 * HOUR_MICRO  # exactly one hour at the bid
        assert earned == 2_100_000  # exactly the ask for one hour
        assert fee == 50_000
        usage = f.p.ok("GET", "/v1/usage", dev)
        assert usage["projects"][0]["charged_micro_usd"] == charged
        assert usage["projects"][0]["jobs"][0]["job_id"] == job
        earnings = f.p.ok("GET", "/v1/earnings", prov_token)
        assert earnings["providers"][0]["earned_micro_usd"] == earned
        assert earnings["providers"][0]["nodes"][0]["hostname"] == "gpu-1"
        assert earnings["fabric_fee_micro_usd"] is None  # only an admin sees the fabric's share
        assert f.p.ok("GET", "/v1/earnings")["fabric_fee_micro_usd"] == fee


def test_without_a_bid_the_job_pays_the_ask_plus_the_fee_and_a_gpu_share_pays_its_share(tmp_path):
    with fabric(tmp_path, fee_bps=500) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpus=1, gpu_price=4.0)
        dev = f.p.token("project", project="research")
        job = f.submit(dev, resources={"gpus": 0.25, "cpus": 1})
        run_to_exit(f, prov, node, job, start=0, end=1800, step=600)
        books = f.balances()
        # a quarter of a $4 GPU for half an hour: $0.50 to the provider, 5% on top for the fabric
        assert books[("fabric", "fabric")] == 25_000
        assert sorted(v for (k, _), v in books.items() if k != "fabric") == [-525_000, 500_000]
        assert_books_balance(f)


def test_rates_never_pass_the_bid_nor_fall_below_the_ask():
    # 2 GPUs at $1.50 and 4 CPUs at $0.05 ask $3.20/h: above a $3.10 bid (the ask rose after placement)
    provider, fee = ledger.rates(gpu_milli=2000, cpu_milli=4000, gpu_ask=1.5, cpu_ask=0.05, bid=3.1, fee_bps=1000)
    assert (provider, fee) == (3_100_000_000, 0)
    provider, fee = ledger.rates(2000, 4000, 1.5, 0.05, bid=4.0, fee_bps=1000)
    assert provider == 3_200_000_000 and fee == 320_000_000  # the ask, and the whole fee fits under the bid
    provider, fee = ledger.rates(1000, 0, 1.0, 0.0, bid=None, fee_bps=0)
    assert (provider, fee) == (1_000_000_000, 0)
    assert ledger.to_micro(0.1) == 100_000 and ledger.to_micro("2.15") == 2_150_000
    assert ledger.format_usd(2_150_000) == "2.15" and ledger.format_usd(-1) == "-0.000001"


# -- metering --------------------------------------------------------------------------------------


def test_metering_the_same_interval_twice_books_it_once(tmp_path):
    with fabric(tmp_path, interval_s=60.0) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=3.6)
        job = f.submit(f.p.token("project", project="p"))
        f.tick(0)
        f.heartbeat(prov, node, 10)
        first = f.meter(10)
        assert first.opened == 1
        f.heartbeat(prov, node, 130)
        assert f.meter(130).booked == 1
        count = len(f.entries())
        assert f.meter(130).booked == 0 and f.meter(130).booked == 0
        assert f.meter(150).booked == 0  # the interval has not passed: nothing is due
        assert len(f.entries()) == count
        with f.session() as s:
            meter = s.get(m.LedgerMeter, f.alloc_of(job).id)
            assert meter.metered_to == T0 + 130
            assert meter.provider_micro == 120_000  # 120 s at $3.60/h
        assert_books_balance(f)


def test_a_lost_attempt_is_charged_until_its_last_heartbeat_and_a_preempted_one_until_it_stopped(tmp_path):
    with fabric(tmp_path, interval_s=30.0, lost_after_s=60.0) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=3.6)
        dev = f.p.token("project", project="p")
        job = f.submit(dev, retry={"limit": 0})
        f.tick(0)
        f.heartbeat(prov, node, 100)  # running from 100
        f.heartbeat(prov, node, 160)
        f.heartbeat(prov, node, 220)  # its last word
        f.meter(250)  # booked to 250, past the last heartbeat
        with f.session() as s:
            assert s.get(m.LedgerMeter, f.alloc_of(job).id).provider_micro == 150_000
        f.tick(290)  # silent for 70 s > 60 s: lost
        assert f.alloc_of(job).state == AllocationState.lost.value
        f.tick(291)  # the final pass books the refund back to the last heartbeat
        with f.session() as s:
            meter = s.get(m.LedgerMeter, f.alloc_of(job).id)
            assert meter.closed and meter.end_at == T0 + 220
            assert meter.provider_micro == 120_000  # 100 -> 220 at $3.60/h
        assert_books_balance(f)

    with fabric(tmp_path / "preempt", interval_s=30.0) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=3.6)
        dev = f.p.token("project", project="p")
        low = f.submit(dev, priority=10, interruptible=True)
        f.tick(0)
        f.heartbeat(prov, node, 10)
        f.tick(40)
        high = f.submit(dev, priority=90)
        f.tick(50)
        victim = f.alloc_of(low)
        assert victim.state == "stopping" and victim.stop_reason.startswith("preempted")
        f.heartbeat(prov, node, 70, [Finished(victim.id, 143, stopped=True)])  # stopped after its grace
        assert f.job(low).state == "pending"
        f.tick(71)
        f.tick(500)  # the retried job waits; a pending job is charged nothing
        with f.session() as s:
            meter = s.get(m.LedgerMeter, victim.id)
            assert meter.closed and meter.provider_micro == 60_000  # 10 -> 70
            charged_low = -s.scalar(select(func.sum(m.LedgerEntry.amount_micro)).join(
                m.LedgerAccount, m.LedgerAccount.id == m.LedgerEntry.account_id).where(
                m.LedgerEntry.job_id == low, m.LedgerAccount.kind == "project"))
            assert charged_low == 66_000  # and 10% fee
        assert f.job(high).state in ("starting", "running")
        assert_books_balance(f)


# -- budgets ---------------------------------------------------------------------------------------


def test_a_budget_refuses_a_job_it_cannot_cover_and_stops_work_that_reaches_it(tmp_path):
    with fabric(tmp_path, interval_s=600.0, fee_bps=0) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=2.0)
        dev = f.p.token("project", project="capped")
        budget = f.p.ok("PUT", "/v1/budgets/capped", json={"amount_usd": "1.00"})
        assert budget["cap_micro_usd"] == HOUR_MICRO and budget["remaining_micro_usd"] == HOUR_MICRO
        r = f.p.call("POST", "/v1/jobs", dev, json={"command": ["x"], "resources": {"gpus": 1},
                                                    "max_price_per_hour": 2.0, "max_duration": "1h"})
        assert r.status_code == 409 and "may cost up to 2.00 USD" in r.json()["detail"], r.text
        job = f.submit(dev, max_price_per_hour=2.0)  # no max_duration: accepted, stopped when the money runs out
        f.tick(0)
        f.heartbeat(prov, node, 0)
        for t in range(60, 1800, 60):
            f.heartbeat(prov, node, t)
            f.tick(t)
            assert f.alloc_of(job).state == "running", t
        f.heartbeat(prov, node, 1800)
        report = f.tick(1800)  # $2/h for 30 min: the cap is reached
        assert report.exhausted
        alloc = f.alloc_of(job)
        assert alloc.state == "stopping" and alloc.stop_reason == "budget exhausted"
        assert f.heartbeat(prov, node, 1805).stop[0]["reason"] == "budget exhausted"
        f.heartbeat(prov, node, 1815, [Finished(alloc.id, 143, stopped=True)])  # after a 15 s grace
        f.tick(1816)
        final = f.job(job)
        assert final.state == "failed" and final.reason == "budget exhausted"
        spent = f.p.ok("GET", "/v1/budgets/capped", dev)
        # never past the cap by more than what one metering interval costs; here by nothing (the grace period
        # is the fabric's)
        assert HOUR_MICRO <= spent["spent_micro_usd"] <= HOUR_MICRO + 2 * HOUR_MICRO * 600 // 3600
        assert spent["exhausted"] and spent["spent_micro_usd"] == HOUR_MICRO
        with f.session() as s:
            meter = s.get(m.LedgerMeter, alloc.id)
            assert meter.provider_micro == 1_008_333  # the provider is paid for the grace period too
            assert meter.fabric_micro == -8_333
        assert_books_balance(f)
        r = f.p.call("POST", "/v1/jobs", dev, json={"command": ["x"]})
        assert r.status_code == 409 and "budget exhausted" in r.json()["detail"]
        # raising the cap lets the project run again
        f.p.ok("PUT", "/v1/budgets/capped", json={"amount_usd": 5})
        f.submit(dev)


def test_a_budget_set_below_what_was_spent_stops_the_project_at_once(tmp_path):
    with fabric(tmp_path, interval_s=60.0) as f:
        prov_token, prov = f.provider("acme")
        node = f.node(prov_token, "gpu-1", gpu_price=36.0)
        dev = f.p.token("project", project="p")
        job = f.submit(dev)
        waiting = f.submit(dev)
        f.tick(0)
        f.heartbeat(prov, node, 0)
        f.heartbeat(prov, node, 100)
        f.tick(100)
        assert f.p.ok("GET", "/v1/budgets/p")["spent_micro_usd"] > 0
        out = f.p.ok("PUT", "/v1/budgets/p", json={"amount_usd": "0.5"})
        assert out["exhausted"]
        assert f.alloc_of(job).stop_reason == "budget exhausted"
        assert f.job(waiting).state == "failed" and f.job(waiting).reason.startswith("budget exhausted")
        assert f.p.ok("DELETE", "/v1/budgets/p")["cap_micro_usd"] is None


# -- scoping and bad input -------------------------------------------------------------------------


def test_each_token_reads_only_its_own_usage_or_earnings(tmp_path):
    with fabric(tmp_path) as f:
        a = f.p.token("project", project="alpha")
        f.p.token("project", project="beta")
        prov_a, _ = f.provider("acme")
        f.provider("other")
        assert f.p.call("GET", "/v1/usage?project=beta", a).status_code == 403
        assert [p["project"] for p in f.p.ok("GET", "/v1/usage", a)["projects"]] == ["alpha"]
        assert f.p.ok("GET", "/v1/usage?project=alpha", a)["projects"][0]["project"] == "alpha"
        assert f.p.call("GET", "/v1/budgets/beta", a).status_code == 403
        assert [b["project"] for b in f.p.ok("GET", "/v1/budgets", a)] == ["alpha"]
        assert f.p.call("GET", "/v1/earnings", a).status_code == 403
        assert f.p.call("GET", "/v1/usage", prov_a).status_code == 403
        assert f.p.call("GET", "/v1/earnings?provider=other", prov_a).status_code == 403
        assert [p["provider"] for p in f.p.ok("GET", "/v1/earnings", prov_a)["providers"]] == ["acme"]
        assert f.p.call("PUT", "/v1/budgets/alpha", a, json={"amount_usd": 10}).status_code == 403
        assert f.p.call("GET", "/v1/usage?project=nosuch").status_code == 404
        assert f.p.call("PUT", "/v1/budgets/nosuch", json={"amount_usd": 1}).status_code == 404
        assert f.p.call("GET", "/v1/usage", "").status_code == 401


BAD_BUDGETS = [
    ({"amount_usd": -5}, "greater than or equal to 0"),
    ({"amount_usd": 1e12}, "less than or equal to"),
    ({"amount_usd": "ten"}, "valid decimal"),
    ({"amount_usd": "0.0000001"}, "decimal places"),
    ({"amount_usd": "NaN"}, "finite"),
    ({}, "required"),
]


def test_bad_budgets_are_refused_with_the_reason(tmp_path):
    with fabric(tmp_path) as f:
        f.p.token("project", project="p")
        for body, reason in BAD_BUDGETS:
            r = f.p.call("PUT", "/v1/budgets/p", json=body)
            assert r.status_code == 422 and reason in r.json()["detail"].lower(), (body, r.text)
            assert r.json()["errors"]
        assert f.p.ok("GET", "/v1/budgets/p")["cap_micro_usd"] is None  # nothing was set


def test_the_cli_reads_times_and_prints_dollars():
    from ceti.cli.ledger import parse_time, usd

    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("24h", now=100_000.0) == 100_000.0 - 86_400
    assert parse_time("2024-01-02T00:00:00+00:00") == 1_704_153_600.0
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday-ish")
    assert usd(2_150_000) == "$2.15" and usd(1_234_567_891) == "$1,234.567891" and usd(None) == "-"


def test_bad_time_ranges_are_refused_with_the_reason(tmp_path):
    with fabric(tmp_path) as f:
        for query, reason in [("from=200&to=100", "is after to"), ("from=-1", "greater than or equal to 0"),
                              ("to=nan", "finite"), ("from=soon", "valid number"), ("to=1e30", "less than")]:
            for path in ("/v1/usage", "/v1/earnings"):
                r = f.p.call("GET", f"{path}?{query}")
                assert r.status_code == 422 and reason in r.json()["detail"], (path, query, r.text)
                assert r.json()["errors"]


def test_the_books_refuse_a_posting_that_does_not_balance(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ceti.db'}")
    migrate(engine)
    with session_factory(engine)() as s:
        a = ledger.account(s, "project", "x", 0.0)
        b = ledger.account(s, "provider", "y", 0.0)
        with pytest.raises(ledger.UnbalancedTransaction):
            ledger.post(s, [ledger.Leg(a, -5), ledger.Leg(b, 4)], kind="usage", now=0, period_from=0, period_to=1)
        with pytest.raises(ledger.UnbalancedTransaction):
            ledger.post(s, [ledger.Leg(a, -0.5), ledger.Leg(b, 0.5)], kind="usage", now=0, period_from=0,
                        period_to=1)
        assert ledger.post(s, [ledger.Leg(a, 0)], kind="usage", now=0, period_from=0, period_to=1) is None
        assert s.scalar(select(func.count()).select_from(m.LedgerEntry)) == 0
        assert a.balance_micro == 0 and b.balance_micro == 0
    engine.dispose()


# -- random sequences ------------------------------------------------------------------------------

_ids = itertools.count()


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger-books")
    engine = make_engine(f"sqlite:///{tmp / 'ceti.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        bootstrap_admin(s, 0.0)
        project = ensure_project(s, "random", 0.0).id
        provider = ensure_provider(s, "random", 0.0).id
        s.commit()
    yield sessions, project, provider
    engine.dispose()


step = st.one_of(
    st.tuples(st.just("meter"), st.floats(0, 5000)),
    st.tuples(st.just("end"), st.sampled_from(["exited", "stopped", "lost"])),
    st.tuples(st.just("budget_stop"), st.floats(0, 5000)),
)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gpu_ask=st.floats(0, 50).map(lambda x: round(x, 4)), cpu_ask=st.floats(0, 2).map(lambda x: round(x, 4)),
       gpus=st.integers(0, 8), share=st.sampled_from([0, 250, 500]), cpu_milli=st.integers(0, 64000),
       bid=st.one_of(st.none(), st.floats(0, 500).map(lambda x: round(x, 3))), fee_bps=st.integers(0, 5000),
       interval=st.sampled_from([0.0, 30.0, 600.0]), heartbeat_gap=st.floats(0, 3000),
       steps=st.lists(step, min_size=1, max_size=12))
def test_random_metering_sequences_keep_the_books_balanced(books, gpu_ask, cpu_ask, gpus, share, cpu_milli, bid,
                                                           fee_bps, interval, heartbeat_gap, steps):
    sessions, project_id, provider_id = books
    settings = Settings(ledger=LedgerSettings(meter_interval_s=interval, fee_bps=fee_bps))
    n = next(_ids)
    start = 1000.0
    with sessions() as s:
        info = NodeInfo(hostname=f"n{n}", cpus=64, memory_mib=1024, price_per_gpu_hour=gpu_ask,
                        price_per_cpu_hour=cpu_ask)
        node = m.Node(id=f"node-{n}", provider_id=provider_id, hostname=info.hostname, region="local",
                      info=info.model_dump(mode="json"), state="online", registered_at=0.0,
                      last_heartbeat_at=start + heartbeat_gap)
        job = m.Job(id=f"job-{n}", project_id=project_id, name="j", spec={"max_price_per_hour": bid},
                    state="running", priority=50, queue_order=n, reason="", created_at=0.0, updated_at=0.0)
        s.add_all([node, job])
        s.flush()
        gpu_indices = list(range(1 if share else gpus))
        alloc = m.Allocation(id=f"alloc-{n}", job_id=job.id, node_id=node.id, attempt=1, state="running",
                             gpu_indices=gpu_indices, gpu_share_milli=share, cpu_milli=cpu_milli, memory_mib=1,
                             created_at=start, started_at=start)
        s.add(alloc)
        s.commit()
        clock = start
        ended = False
        for op, arg in steps:
            if op == "meter":
                clock = max(clock, start + arg)
                ledger.meter(s, clock, settings)
            elif op == "end" and not ended:
                clock += 1.0
                state = AllocationState(arg)
                alloc.state, alloc.ended_at = state.value, clock
                ledger.attempt_ended(s, alloc, state, clock)
                ended = True
            elif op == "budget_stop":
                meter = s.get(m.LedgerMeter, alloc.id)
                if meter is not None and meter.budget_stop_at is None and not meter.closed:
                    meter.budget_stop_at = start + arg
            s.commit()
        final_clock = clock + 10_000
        ledger.meter(s, final_clock, settings)
        s.commit()
        entries = s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.allocation_id == alloc.id)).all()
        by_txn: dict[str, int] = defaultdict(int)
        for e in entries:
            by_txn[e.txn_id] += e.amount_micro
        assert all(v == 0 for v in by_txn.values())
        meter = s.get(m.LedgerMeter, alloc.id)
        if meter is None:
            assert not entries
            return
        end = meter.end_at if meter.end_at is not None else final_clock
        owed = ledger.owed(meter.provider_rate_nano, meter.fee_rate_nano, start, end, meter.budget_stop_at)
        assert (meter.charged_micro, meter.provider_micro, meter.fabric_micro) == owed
        per_kind: dict[str, int] = defaultdict(int)
        for e in entries:
            kind = s.scalar(select(m.LedgerAccount.kind).where(m.LedgerAccount.id == e.account_id))
            per_kind[kind] += e.amount_micro
        assert -per_kind["project"] == meter.charged_micro and per_kind["provider"] == meter.provider_micro
        hours_ms = ledger._ms(start, end)
        paid_ms = hours_ms if meter.budget_stop_at is None else ledger._ms(start, min(end, max(meter.budget_stop_at,
                                                                                              start)))
        # the provider gets at least its ask for the whole time (rounded down to a micro-USD) ...
        ask_nano = ledger.rates(ledger.held_gpu_milli(alloc), cpu_milli, gpu_ask, cpu_ask, None, 0)[0]
        if bid is None or ask_nano <= ledger.to_micro(bid) * 1000:
            assert meter.provider_micro >= ask_nano * hours_ms // ledger._RATE_DIVISOR
        # ... and the project never more than its bid for the time it pays for
        if bid is not None:
            assert meter.charged_micro <= ledger.to_micro(bid) * 1000 * paid_ms // ledger._RATE_DIVISOR
        total = s.scalar(select(func.sum(m.LedgerAccount.balance_micro)))
        assert total == 0
        alloc.state, meter.closed = "exited", True  # leave no open meter to the next example
        s.commit()


# -- both databases --------------------------------------------------------------------------------


def test_metering_and_budgets_on_each_database(tmp_path, database_url):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'ceti.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    settings = Settings(verify=VerifySettings(enabled=False), ledger=LedgerSettings(meter_interval_s=60.0))
    settings.node_lost_after_s = 1e9
    with sessions() as s:
        bootstrap_admin(s, 0.0)
        provider = Principal("p", "provider", provider_id=ensure_provider(s, "acme", 0.0).id)
        project = ensure_project(s, "p", 0.0)
        info = NodeInfo(hostname="n", cpus=8, memory_mib=8192, price_per_gpu_hour=1.8,
                        gpus=[GPUInfo(index=0, model="A100-80GB", vram_mib=81920)])
        node = agents.register(s, provider, info, None, 0.0).id
        job, _ = jobs.submit(s, Principal("t", "project", project_id=project.id),
                             parse_job_spec({"command": ["x"], "resources": {"gpus": 1}}), 0.0, None, 100)
        ledger.meter(s, 1.0, settings)
        scheduling.run_round(s, settings, 1.0)
        s.commit()
        alloc = s.scalars(select(m.Allocation).where(m.Allocation.job_id == job.id)).one()
        agents.heartbeat(s, provider, node, [alloc.id], [], settings, 10.0)
        s.commit()
        ledger.meter(s, 100.0, settings)
        s.commit()
        assert ledger.meter(s, 100.0, settings).booked == 0
        out = ledger.set_budget(s, "p", 50_000, 100.0)  # $0.05; 90 s at $1.98/h spent $0.0495: not yet reached
        s.commit()
        assert out["spent_micro_usd"] == 49_500 and not out["exhausted"]
        report = ledger.meter(s, 110.0, settings)  # what 10 more seconds accrued reaches it
        s.commit()
        assert report.exhausted == [project.id] and alloc.state == "stopping"
        agents.heartbeat(s, provider, node, [], [Finished(alloc.id, 143, stopped=True)], settings, 135.0)
        s.commit()
        ledger.meter(s, 136.0, settings)
        s.commit()
        assert s.get(m.Job, job.id).reason == "budget exhausted"
        balances = {a.kind: a.balance_micro for a in s.scalars(select(m.LedgerAccount))}
        assert sum(balances.values()) == 0 and balances["project"] < 0
        # the cap is passed by what accrued since the last pass, never more than one interval's cost
        assert 50_000 <= -balances["project"] <= 50_000 + 1_980_000 * 60 // 3600
        assert s.scalar(select(func.count()).select_from(m.LedgerMeter).where(m.LedgerMeter.closed.is_(True))) == 1
    engine.dispose()
