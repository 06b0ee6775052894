"""Background work shared by claiming rows (services/claims.py), on SQLite and PostgreSQL, with the clock passed in:
claimers never share a row, an expired claim is taken over and the slow claimer's final write does nothing, a
heartbeat that arrives after the claim wins, racing metering passes book each meter once, and the scheduling
round and the lost-node sweep, in either order, never leave an allocation on a lost node."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text

from ceti import fabric
from ceti.server.background.sweeper import Sweeper
from ceti.server.services import agents, claims, jobs, ledger, lost_nodes, scheduling
from ceti.server.services.tokens import Principal, ensure_project
from ceti.server.settings import LedgerSettings, Settings, VerifySettings
from ceti.spec import AllocationState, NodeInfo, parse_job_spec
from ceti.store import models as m
from tests.conftest import statements_sent

ADMIN = Principal("t", "admin")
ACTIVE = [s.value for s in AllocationState if s.active]


def settings() -> Settings:
    return Settings(verify=VerifySettings(enabled=False), node_lost_after_s=30.0, claim_ttl_s=15.0,
                    ledger=LedgerSettings(meter_interval_s=60.0, fee_bps=1000))


def node(s, who: Principal, name: str, now: float = 0.0) -> str:
    info = NodeInfo(hostname=name, cpus=4, memory_mib=8000, price_per_cpu_hour=0.36)
    return agents.register(s, who, info, None, now).id


def lost_events(sessions, node_id: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(m.Event).where(
            m.Event.node_id == node_id, m.Event.kind == "node_state", m.Event.to_state == "lost"))


# -- claims ----------------------------------------------------------------------------------------


def test_two_claimers_never_get_the_same_row(db):
    sessions, who = db
    with sessions() as s:
        ids = sorted(node(s, who, f"n{i}") for i in range(10))
        s.commit()
    silent = lost_nodes.silent(settings(), 100.0)
    with sessions() as a, sessions() as b:
        first = claims.claim(a, m.Node, silent, 100.0, 15.0, 4)
        second = claims.claim(b, m.Node, silent, 100.0, 15.0, 4)
        third = claims.claim(a, m.Node, silent, 100.0, 15.0, 4)
        assert claims.claim(b, m.Node, silent, 114.0, 15.0, 4) is None  # every row is held until 115
    assert [len(c.keys) for c in (first, second, third)] == [4, 4, 2]
    assert sorted(first.keys + second.keys + third.keys) == ids
    assert len({first.token, second.token, third.token}) == 3


@pytest.mark.postgres
def test_claimers_skip_rows_another_transaction_holds_and_share_the_rest(pg_db):
    sessions, who = pg_db
    with sessions() as s:
        ids = sorted(node(s, who, f"n{i}") for i in range(12))
        s.commit()
    silent = lost_nodes.silent(settings(), 100.0)
    with sessions() as holder, sessions() as s:
        holder.execute(select(m.Node.id).where(m.Node.id.in_(ids[:3])).with_for_update())
        s.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting for the holder would fail the test
        claimed = claims.claim(s, m.Node, silent, 100.0, 15.0, 20)
        assert claimed.keys == tuple(ids[3:])
        holder.rollback()
    # four replicas at once, two rows a claim, once the first claim has expired
    got: list[tuple] = []
    start = threading.Barrier(4)

    def replica() -> None:
        with sessions() as s:
            start.wait()
            while (c := claims.claim(s, m.Node, lost_nodes.silent(settings(), 200.0), 200.0, 15.0, 2)):
                got.append(c.keys)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(k for keys in got for k in keys) == ids


def test_an_expired_claim_is_taken_over_and_the_slow_claimers_final_write_does_nothing(db):
    sessions, who = db
    cfg = settings()
    with sessions() as s:
        n = node(s, who, "n1")
        s.commit()
    with sessions() as slow, sessions() as other:
        mine = claims.claim(slow, m.Node, lost_nodes.silent(cfg, 100.0), 100.0, cfg.claim_ttl_s, 10)
        assert mine.keys == (n,) and mine.expires_at == 115.0
        assert claims.claim(other, m.Node, lost_nodes.silent(cfg, 110.0), 110.0, cfg.claim_ttl_s, 10) is None
        taken = claims.claim(other, m.Node, lost_nodes.silent(cfg, 116.0), 116.0, cfg.claim_ttl_s, 10)
        assert taken.keys == (n,) and taken.token != mine.token
        assert lost_nodes.declare_lost(slow, cfg, mine, n, 117.0) is False  # its claim is no longer its own
        slow.commit()
        with sessions() as s:
            assert s.get(m.Node, n).state == "online"
        assert lost_nodes.declare_lost(other, cfg, taken, n, 117.0) is True
        other.commit()
    with sessions() as s:
        row = s.get(m.Node, n)
        assert (row.state, row.claim_token, row.claim_expires_at) == ("lost", None, None)
    assert lost_events(sessions, n) == 1


def test_a_heartbeat_between_claim_and_final_write_keeps_the_node_online(db):
    sessions, who = db
    cfg = settings()
    with sessions() as s:
        n = node(s, who, "n1")
        s.commit()
    with sessions() as sweeper:
        claimed = claims.claim(sweeper, m.Node, lost_nodes.silent(cfg, 100.0), 100.0, cfg.claim_ttl_s, 10)
        assert claimed.keys == (n,)
        with sessions() as s:
            agents.heartbeat(s, who, n, [], [], cfg, 101.0)
            s.commit()
        assert lost_nodes.declare_lost(sweeper, cfg, claimed, n, 102.0) is False
        sweeper.commit()
    with sessions() as s:
        row = s.get(m.Node, n)
        assert (row.state, row.last_heartbeat_at, row.claim_token) == ("online", 101.0, None)
    assert lost_events(sessions, n) == 0


def test_two_replicas_sweepers_declare_a_silent_node_lost_once(db):
    sessions, who = db
    cfg = settings()
    with sessions() as s:
        n = node(s, who, "n1")
        s.commit()
    clock = [0.0]
    sweepers = [Sweeper(sessions, cfg, clock=lambda: clock[0]) for _ in range(2)]
    clock[0] = 100.0
    start = threading.Barrier(2)

    def sweep(x: Sweeper) -> None:
        start.wait()
        x.run_once()

    threads = [threading.Thread(target=sweep, args=(x,)) for x in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [x.last_error for x in sweepers] == [None, None]
    assert sum(x.lost_nodes for x in sweepers) == 1
    assert lost_events(sessions, n) == 1


# -- metering --------------------------------------------------------------------------------------


def running_work(sessions, who: Principal, count: int, first: int = 0) -> list[str]:
    """`count` allocations running since t=0 on one node, at $0.36 per CPU-hour each, without meters yet (their
    accounts exist, so the first bookings of several replicas need not wait for one another to make them).
    `first` > 0 adds more to the node and project made by an earlier call."""
    with sessions() as s:
        n = node(s, who, "n1") if first == 0 else s.scalar(select(m.Node.id))
        project = ensure_project(s, "dev", 0.0).id
        for kind, owner in (("project", project), ("provider", who.provider_id), (ledger.FABRIC, ledger.FABRIC)):
            ledger.account(s, kind, owner, 0.0)
        ids = []
        for i in range(first, first + count):
            job = m.Job(id=f"job-{i}", project_id=project, name="j", spec={}, state="running", priority=50,
                        queue_order=i, reason="", created_at=0.0, updated_at=0.0)
            s.add(job)
            s.flush()
            s.add(m.Allocation(id=f"alloc-{i:03d}", job_id=job.id, node_id=n, attempt=1, state="running",
                               gpu_indices=[], cpu_milli=1000, memory_mib=1, created_at=0.0, started_at=0.0))
            ids.append(f"alloc-{i:03d}")
        s.commit()
    return ids


def assert_each_meter_booked_once_to(sessions, allocs: list[str], t: float, txns: int) -> None:
    with sessions() as s:
        for alloc_id in allocs:
            meter = s.get(m.LedgerMeter, alloc_id)
            assert meter.metered_to == t
            owed = ledger.owed(meter.provider_rate_nano, meter.fee_rate_nano, 0.0, t)
            assert (meter.charged_micro, meter.provider_micro, meter.fabric_micro) == owed
            booked = s.scalar(select(func.count(func.distinct(m.LedgerEntry.txn_id)))
                              .where(m.LedgerEntry.allocation_id == alloc_id))
            assert booked == txns, alloc_id
        # every balance is the sum of its entries: no booking was lost to another's write
        for a in s.scalars(select(m.LedgerAccount)):
            total = s.scalar(select(func.coalesce(func.sum(m.LedgerEntry.amount_micro), 0))
                             .where(m.LedgerEntry.account_id == a.id))
            assert a.balance_micro == total, (a.kind, a.owner_id)
        assert sum(ledger.totals_by_kind(s).values()) == 0


def statements_of_a_pass(sessions, now: float) -> tuple[ledger.MeterReport, int]:
    with statements_sent(sessions) as sent, sessions() as s:
        report = ledger.meter(s, now, settings(), batch=100)
    return report, len(sent)


def test_a_metering_pass_opens_prices_and_books_many_new_meters_in_as_many_statements_as_a_few(db):
    sessions, who = db
    few = running_work(sessions, who, 4)
    report, for_few = statements_of_a_pass(sessions, 100.0)
    assert (report.opened, report.booked) == (4, 4)
    many = running_work(sessions, who, 60, first=4)
    report, for_many = statements_of_a_pass(sessions, 100.0)
    assert (report.opened, report.booked) == (60, 60)
    # opening one meter at a time took four statements and a commit each; pricing three lookups each
    assert for_many <= for_few + 2, (for_few, for_many)
    assert_each_meter_booked_once_to(sessions, few + many, 100.0, txns=1)


def test_a_meter_is_booked_exactly_once_when_sweepers_race(db, monkeypatch):
    sessions, who = db
    cfg = settings()
    allocs = running_work(sessions, who, 24)
    post = ledger.post

    def slow_post(*args, **kw):  # each booking takes a while, so the replicas' batches overlap in time
        time.sleep(0.02)
        return post(*args, **kw)

    monkeypatch.setattr(ledger, "post", slow_post)
    reports: list[ledger.MeterReport] = []
    start = threading.Barrier(3)

    def replica() -> None:
        with sessions() as s:
            start.wait()
            reports.append(ledger.meter(s, 100.0, cfg, batch=4))

    threads = [threading.Thread(target=replica) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 3
    assert sum(r.opened for r in reports) == 24 and sum(r.booked for r in reports) == 24
    assert_each_meter_booked_once_to(sessions, allocs, 100.0, txns=1)
    with sessions() as s:
        assert ledger.meter(s, 100.0, cfg).booked == 0  # nothing is due twice


def test_meters_a_dead_replica_claimed_are_booked_by_another_after_the_claim_expires(db):
    sessions, who = db
    cfg = settings()
    allocs = running_work(sessions, who, 6)
    with sessions() as s:
        assert ledger.meter(s, 100.0, cfg).booked == 6
    with sessions() as s:  # a replica claims four meters at 165, then dies
        dead = claims.claim(s, m.LedgerMeter, m.LedgerMeter.closed.is_(False), 165.0, cfg.claim_ttl_s, 4)
    assert dead.keys == tuple(allocs[:4])
    with sessions() as s:
        assert ledger.meter(s, 170.0, cfg).booked == 2  # the others' are held until 180
        assert ledger.meter(s, 179.0, cfg).booked == 0
        assert ledger.meter(s, 181.0, cfg).booked == 4
    with sessions() as s:
        assert [s.get(m.LedgerMeter, a).metered_to for a in allocs] == [181.0] * 4 + [170.0] * 2
        assert s.get(m.LedgerMeter, allocs[0]).claim_token is None


# -- the scheduling round against the lost-node sweep ----------------------------------------------


def pending_job_on_a_silent_node(sessions, who: Principal) -> tuple[str, str]:
    with sessions() as s:
        n = node(s, who, "n1")  # last heard of at t=0: silent at t=100, but nobody has declared it lost yet
        job, _ = jobs.submit(s, ADMIN, parse_job_spec({"command": ["x"], "resources": {"cpus": 1}}), 1.0, None, 100)
        s.commit()
        return n, job.id


def assigned_on_a_silent_node(sessions, who: Principal) -> tuple[str, str, m.Allocation]:
    """A job placed (not yet running) on a node silent since t=0, at t=100: due for the sweep."""
    n, job_id = pending_job_on_a_silent_node(sessions, who)
    with sessions() as s:
        snapshot, decisions = plan_round(s, 100.0)
        scheduling.apply_decisions(s, snapshot, decisions, 100.0)
        s.commit()
    (alloc,) = live_allocations(sessions, n)
    return n, job_id, alloc


def live_allocations(sessions, node_id: str) -> list[m.Allocation]:
    with sessions() as s:
        return list(s.scalars(select(m.Allocation).where(m.Allocation.node_id == node_id,
                                                         m.Allocation.state.in_(ACTIVE))))


def plan_round(s, now: float) -> tuple[fabric.Snapshot, fabric.Decisions]:
    snapshot = scheduling.build_snapshot(s, now)
    return snapshot, fabric.schedule(snapshot)


def test_a_node_declared_lost_after_the_rounds_snapshot_gets_no_work(db):
    sessions, who = db
    cfg = settings()
    n, job_id = pending_job_on_a_silent_node(sessions, who)
    with sessions() as leader:
        snapshot, decisions = plan_round(leader, 100.0)
        assert [st.node_id for st in decisions.starts] == [n]  # the snapshot still has it online
        with sessions() as follower:
            assert lost_nodes.sweep(follower, cfg, 100.0) == 1
        report = scheduling.apply_decisions(leader, snapshot, decisions, 100.0)
        leader.commit()
    assert report.started == 0 and report.pending_reasons == {scheduling.NODE_GONE: 1}
    assert live_allocations(sessions, n) == []
    with sessions() as s:
        job = s.get(m.Job, job_id)
        assert (job.state, job.reason) == ("pending", scheduling.NODE_GONE)


def test_a_sweep_that_meets_a_rounds_placement_waits_for_it_and_ends_the_new_work(db):
    sessions, who = db
    cfg = settings()
    n, job_id = pending_job_on_a_silent_node(sessions, who)
    with sessions() as follower:
        claimed = claims.claim(follower, m.Node, lost_nodes.silent(cfg, 100.0), 100.0, cfg.claim_ttl_s, 10)
    assert claimed.keys == (n,)
    declared: list[bool] = []

    def final_write() -> None:
        with sessions() as follower:
            declared.append(lost_nodes.declare_lost(follower, cfg, claimed, n, 100.5))
            follower.commit()

    with sessions() as leader:
        snapshot, decisions = plan_round(leader, 100.0)
        assert scheduling.apply_decisions(leader, snapshot, decisions, 100.0).started == 1  # holds the node
        sweep = threading.Thread(target=final_write)
        sweep.start()
        sweep.join(0.5)
        assert sweep.is_alive() and not declared  # the final write waits for the round's lock on the node
        leader.commit()
    sweep.join(30)
    assert declared == [True]
    assert live_allocations(sessions, n) == []
    with sessions() as s:
        (alloc,) = s.scalars(select(m.Allocation).where(m.Allocation.job_id == job_id)).all()
        job = s.get(m.Job, job_id)
        assert alloc.state == "lost" and (job.state, job.retries) == ("pending", 1)


@pytest.mark.postgres
def test_a_heartbeat_that_read_before_a_sweep_does_not_revive_the_attempt_it_ended(pg_db, monkeypatch):
    sessions, who = pg_db
    cfg = settings()
    n, job_id, alloc = assigned_on_a_silent_node(sessions, who)
    read = agents._live_allocations

    def read_then_sweep(s, node_id):  # the sweep commits between the heartbeat's read and its write
        live = read(s, node_id)
        with sessions() as follower:
            assert lost_nodes.sweep(follower, cfg, 100.0) == 1
        return live

    monkeypatch.setattr(agents, "_live_allocations", read_then_sweep)
    with sessions() as s:
        answer = agents.heartbeat(s, who, n, [alloc.id], [], cfg, 100.2)
        s.commit()
    assert alloc.id not in [r["allocation_id"] for r in answer.run]
    with sessions() as s:
        row, job = s.get(m.Allocation, alloc.id), s.get(m.Job, job_id)
        assert row.state == "lost" and (job.state, job.retries) == ("pending", 1)


@pytest.mark.postgres
def test_a_sweep_passes_by_a_node_whose_exit_report_is_being_applied(pg_db, monkeypatch):
    sessions, who = pg_db
    cfg = settings()
    n, job_id, alloc = assigned_on_a_silent_node(sessions, who)
    with sessions() as s:
        agents.heartbeat(s, who, n, [alloc.id], [], cfg, 5.0)  # running; silent from t=5 on
        s.commit()
    real_end = agents.end_attempt
    declared: list[int] = []

    def end_after_a_sweep(*args, **kwargs):  # a sweep comes by while the report is being applied
        with sessions() as follower:
            declared.append(lost_nodes.sweep(follower, cfg, 100.3))
        return real_end(*args, **kwargs)

    monkeypatch.setattr(agents, "end_attempt", end_after_a_sweep)
    with sessions() as s:
        agents.heartbeat(s, who, n, [], [agents.Finished(alloc.id, 0)], cfg, 100.2)
        s.commit()
    assert declared == [0]  # the report holds the node's row: the sweep skips it (a later sweep may take it)
    with sessions() as s:
        row, job = s.get(m.Allocation, alloc.id), s.get(m.Job, job_id)
        assert row.state == "exited" and (job.state, job.retries) == ("succeeded", 0)
