"""The heartbeat clock writes quiet heartbeats' times in batches: only forward, only on online nodes, kept across a
failed write, and written before a sweep reads them, so a node that heartbeats is never declared lost for it."""

from __future__ import annotations

from sqlalchemy import update

from ceti.server.background.heartbeat_clock import HeartbeatClock
from ceti.server.background.sweeper import Sweeper
from ceti.server.services import agents
from ceti.server.settings import LedgerSettings, Settings, VerifySettings
from ceti.spec import NodeInfo
from ceti.store import models as m


def settings() -> Settings:
    return Settings(verify=VerifySettings(enabled=False), node_lost_after_s=30.0,
                    ledger=LedgerSettings(meter_interval_s=60.0))


def nodes(sessions, who, n: int) -> list[str]:
    with sessions() as s:
        ids = [agents.register(s, who, NodeInfo(hostname=f"h{i}", cpus=4, memory_mib=8000), None, 0.0).id
               for i in range(n)]
        s.commit()
    return ids


def seen(sessions, node_id: str) -> float:
    with sessions() as s:
        return s.get(m.Node, node_id).last_heartbeat_at


def test_times_move_forward_in_one_flush_and_only_on_online_nodes(db):
    sessions, who = db
    a, b, gone = nodes(sessions, who, 3)
    with sessions() as s:
        s.execute(update(m.Node).where(m.Node.id == gone).values(state="lost"))
        s.commit()
    clock = HeartbeatClock(sessions)
    clock.note(a, 5.0)
    clock.note(a, 4.0)  # an older note never wins
    clock.note(b, 7.0)
    clock.note(gone, 9.0)
    assert clock.flush() == 3 and clock.flushed == 3
    assert (seen(sessions, a), seen(sessions, b), seen(sessions, gone)) == (5.0, 7.0, 0.0)
    with sessions() as s:  # a full heartbeat wrote a later time meanwhile: the clock does not move it back
        s.execute(update(m.Node).where(m.Node.id == a).values(last_heartbeat_at=20.0))
        s.commit()
    clock.note(a, 10.0)
    clock.flush()
    assert seen(sessions, a) == 20.0
    assert clock.flush() == 0  # nothing noted since


def test_a_failed_write_keeps_the_times_for_the_next_flush(db):
    sessions, who = db
    (a,) = nodes(sessions, who, 1)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return sessions()

    clock = HeartbeatClock(flaky)
    clock.note(a, 3.0)
    assert clock.flush() == 0 and "ConnectionError" in clock.last_error
    clock.note(a, 2.0)  # older than the kept time: the kept one wins
    assert clock.flush() == 1 and clock.last_error is None
    assert seen(sessions, a) == 3.0


def test_a_sweep_writes_the_held_times_before_it_judges(db):
    sessions, who = db
    quiet, silent = nodes(sessions, who, 2)
    clock = HeartbeatClock(sessions)
    sweeper = Sweeper(sessions, settings(), clock=lambda: 100.0, before_sweep=clock.flush)
    sweeper.listening_since = 0.0
    clock.note(quiet, 95.0)  # answered quietly 5 s ago, not yet written
    sweeper.run_once()
    with sessions() as s:
        assert s.get(m.Node, quiet).state == "online"
        assert s.get(m.Node, silent).state == "lost"
    assert sweeper.lost_nodes == 1
