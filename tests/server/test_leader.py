"""The scheduler's leader lease, in process: acquire, renew, takeover after expiry with a higher term, and the
fence that keeps a deposed leader from committing. On SQLite and, where installed, PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ceti.server.app import create_app
from ceti.server.background.leader import LeaderElector
from ceti.server.background.scheduler_loop import SchedulerLoop
from ceti.server.services import agents, jobs, scheduling
from ceti.server.services.leader import SCHEDULER, NotLeader, acquire, check_term, current, release
from ceti.server.services.tokens import Principal, bootstrap_admin, ensure_provider
from ceti.server.settings import Settings
from ceti.spec import NodeInfo, parse_job_spec
from ceti.store import models as m
from ceti.store.db import make_engine, migrate, session_factory

LEASE_S = 10.0
ADMIN = Principal("t", "admin")


@pytest.fixture
def sessions(tmp_path: Path, database_url: str | None):
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'ceti.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def take(sessions, holder: str, now: float, lease_s: float = LEASE_S) -> int | None:
    with sessions() as s:
        term = acquire(s, SCHEDULER, holder, now, lease_s)
        s.commit()
        return term


def fence_ok(sessions, holder: str, term: int, now: float) -> bool:
    with sessions() as s:
        try:
            check_term(s, SCHEDULER, holder, term, now)
        except NotLeader:
            return False
        return True


def test_first_replica_takes_term_1_and_renewing_keeps_it(sessions):
    assert take(sessions, "a", 0.0) == 1
    assert take(sessions, "a", 5.0) == 1
    assert take(sessions, "b", 9.0) is None  # a's lease runs to 15 now
    with sessions() as s:
        lease = current(s)
    assert (lease.holder, lease.term, lease.expires_at) == ("a", 1, 15.0)


def test_takeover_only_after_expiry_and_with_a_higher_term(sessions):
    assert take(sessions, "a", 0.0) == 1
    assert take(sessions, "b", 9.9) is None
    assert take(sessions, "b", 10.0) == 2
    assert take(sessions, "a", 10.5) is None  # the old leader cannot renew its way back in
    assert take(sessions, "b", 12.0) == 2
    assert take(sessions, "a", 22.0) == 3  # b lapsed: a takes over again, in a new term


def test_a_lapsed_leader_keeps_its_term_when_no_one_took_over(sessions):
    assert take(sessions, "a", 0.0) == 1
    assert not fence_ok(sessions, "a", 1, 11.0)  # expired: its writes are refused ...
    assert take(sessions, "a", 11.0) == 1  # ... until it renews; no one else led meanwhile
    assert fence_ok(sessions, "a", 1, 12.0)


def test_the_fence_refuses_a_deposed_term(sessions):
    assert take(sessions, "a", 0.0) == 1
    assert fence_ok(sessions, "a", 1, 5.0)
    assert take(sessions, "b", 10.0) == 2
    assert not fence_ok(sessions, "a", 1, 10.5)
    assert not fence_ok(sessions, "b", 1, 10.5)  # the holder alone is not enough: the term must match
    assert fence_ok(sessions, "b", 2, 10.5)


def test_release_hands_over_at_once(sessions):
    assert take(sessions, "a", 0.0) == 1
    with sessions() as s:
        assert release(s, SCHEDULER, "a", 1, 1.0)
        s.commit()
    assert take(sessions, "b", 1.0) == 2


def _pending_job_on_one_node(sessions) -> str:
    with sessions() as s:
        bootstrap_admin(s, 0.0)
        provider = Principal("pt", "provider", provider_id=ensure_provider(s, "p", 0.0).id)
        agents.register(s, provider, NodeInfo(hostname="n1", cpus=8, memory_mib=32000), None, time.time())
        job, _ = jobs.submit(s, ADMIN, parse_job_spec({"command": ["x"]}), time.time(), None, 1000)
        s.commit()
        return job.id


def test_a_deposed_leader_commits_no_decisions(sessions):
    job_id = _pending_job_on_one_node(sessions)
    clock = [time.time()]
    old = LeaderElector(sessions, LEASE_S, clock=lambda: clock[0], replica_id="old")
    assert old.try_acquire() == 1
    assert take(sessions, "new", clock[0] + LEASE_S + 1) == 2  # its lease lapsed (a long pause) and was taken
    assert old.term() == 1  # it still believes it leads ...
    with sessions() as s, pytest.raises(NotLeader, match="term 1 is over"):
        scheduling.run_round(s, Settings(), clock[0], fence=old.fence)
        s.commit()
    with sessions() as s:  # ... but its round left nothing behind
        assert s.get(m.Job, job_id).state == "pending"
        assert s.scalar(select(func.count()).select_from(m.Allocation)) == 0
    new = LeaderElector(sessions, LEASE_S, clock=lambda: clock[0] + LEASE_S + 2, replica_id="new")
    assert new.try_acquire() == 2
    with sessions() as s:
        scheduling.run_round(s, Settings(), clock[0], fence=new.fence)
        s.commit()
        assert s.get(m.Job, job_id).state == "starting"


def test_a_takeover_waits_for_the_leaders_transaction_in_flight(sessions):
    assert take(sessions, "a", 0.0) == 1
    done: list[int | None] = []
    with sessions() as s:
        check_term(s, SCHEDULER, "a", 1, 9.0)  # a's decision transaction holds the lease row ...
        taker = threading.Thread(target=lambda: done.append(take(sessions, "b", 11.0)), daemon=True)
        taker.start()
        taker.join(0.5)
        assert taker.is_alive() and not done  # ... so b's takeover waits for it
        s.commit()
    taker.join(10)
    assert done == [2]
    assert not fence_ok(sessions, "a", 1, 11.5)


def test_only_the_leading_loop_runs_rounds_and_a_release_hands_over(sessions):
    job_id = _pending_job_on_one_node(sessions)
    settings = Settings()
    settings.leader_lease_s = LEASE_S
    first, second = SchedulerLoop(sessions, settings), SchedulerLoop(sessions, settings)
    assert first.run_once() is not None
    assert second.run_once() is None and second.rounds == 0
    first.leader.stop()  # a graceful shutdown gives the lease back
    assert first.run_once() is None
    assert second.leader.try_acquire() == 2  # the follower's next try (its thread's, when the loop runs)
    assert second.run_once() is not None
    assert second.leader.term() == 2
    with sessions() as s:
        assert s.get(m.Job, job_id).state == "starting"


def test_a_follower_takes_over_when_the_leaders_renewals_stop(sessions):
    # a lease long enough that a renewal thread delayed by a busy machine (the suite runs two test processes on
    # two cores) does not lose it early
    lease_s = 1.0
    a = LeaderElector(sessions, lease_s, replica_id="a")
    b = LeaderElector(sessions, lease_s, replica_id="b")
    a.start()
    deadline = time.monotonic() + 5
    while a.term() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    b.start()
    try:
        assert a.term() == 1
        time.sleep(lease_s)
        assert b.term() is None  # a keeps renewing
        a._stop.set()  # a dies: no more renewals, no release
        a._thread.join(5)
        died = time.monotonic()
        while b.term() is None and time.monotonic() - died < 5:
            time.sleep(0.01)
        took_s = time.monotonic() - died
        assert b.term() == 2
        assert took_s <= lease_s * 1.25 + 0.5, took_s
    finally:
        b.stop()
        a._stop.set()


def test_the_scheduler_endpoint_shows_leadership(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "server", database_url=None)
    app = create_app(settings, admin_token_file=tmp_path / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"Authorization": f"Bearer {(tmp_path / 'admin-token').read_text().strip()}"}
        before = client.get("/v1/scheduler", headers=headers).json()
        assert before["leader"] is False and before["term"] is None and before["replica_id"]
        app.state.scheduler.run_once()
        after = client.get("/v1/scheduler", headers=headers).json()
        assert after["leader"] is True and after["term"] == 1 and after["lease_expires_at"] > time.time()


def test_a_sole_replica_takes_over_a_dead_predecessors_lease_at_once(sessions):
    assert take(sessions, "killed", 0.0) == 1
    with sessions() as s:
        assert acquire(s, SCHEDULER, "restarted", 1.0, LEASE_S, sole=True) == 2
        assert acquire(s, SCHEDULER, "restarted", 2.0, LEASE_S, sole=True) == 2
        s.commit()
    assert not fence_ok(sessions, "killed", 1, 2.0)
