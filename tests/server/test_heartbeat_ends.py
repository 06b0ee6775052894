"""A heartbeat that reports many finished attempts at once (a big node that ran many small jobs) applies every
report, and reads its rows in bulk: the reads it sends do not grow with the number of reports. Likewise many
attempts reported running at once move in one statement."""

from __future__ import annotations

from sqlalchemy import select

from ceti import fabric
from ceti.server.services import agents, jobs, ledger, scheduling
from ceti.server.services.tokens import Principal
from ceti.server.settings import LedgerSettings, Settings, VerifySettings
from ceti.spec import NodeInfo, parse_job_spec
from ceti.store import models as m
from tests.conftest import statements_sent

ADMIN = Principal("admin", "admin")


def settings() -> Settings:
    return Settings(verify=VerifySettings(enabled=False), ledger=LedgerSettings(meter_interval_s=60.0, fee_bps=1000))


def assigned_jobs(sessions, who: Principal, n: int, name: str) -> tuple[str, list[str]]:
    """A node given `n` one-CPU jobs at t=10, not yet reported running."""
    with sessions() as s:
        info = NodeInfo(hostname=name, cpus=64, memory_mib=256_000, price_per_cpu_hour=0.36)
        node_id = agents.register(s, who, info, None, 0.0).id
        for i in range(n):
            jobs.submit(s, ADMIN, parse_job_spec({"name": f"{name}-{i}", "command": ["x"], "resources": {"cpus": 1}}),
                        1.0, None, 1000)
        s.commit()
    with sessions() as s:
        snapshot = scheduling.build_snapshot(s, 10.0)
        scheduling.apply_decisions(s, snapshot, fabric.schedule(snapshot), 10.0)
        s.commit()
    with sessions() as s:
        alloc_ids = sorted(s.scalars(select(m.Allocation.id).where(m.Allocation.node_id == node_id)))
        assert len(alloc_ids) == n
    return node_id, alloc_ids


def running_jobs(sessions, who: Principal, n: int, name: str) -> tuple[str, list[str]]:
    """A node running `n` one-CPU jobs, each with its meter open (metered once), at t=20."""
    cfg = settings()
    node_id, alloc_ids = assigned_jobs(sessions, who, n, name)
    with sessions() as s:
        agents.heartbeat(s, who, node_id, alloc_ids, [], cfg, 11.0)
        s.commit()
    with sessions() as s:
        ledger.meter(s, 20.0, cfg)
        s.commit()
    return node_id, alloc_ids


def reads_to_report_ends(sessions, who: Principal, node_id: str, alloc_ids: list[str], running: list[str],
                              now: float) -> int:
    with statements_sent(sessions, "SELECT") as sent, sessions() as s:
        finished = [agents.Finished(a, 0, cpu_seconds=1.0, peak_memory_mib=10.0, wall_s=9.0) for a in alloc_ids]
        agents.heartbeat(s, who, node_id, running, finished, settings(), now)
        s.commit()
    return len(sent)


def test_many_ends_in_one_heartbeat_are_all_applied_with_no_more_reads_than_a_few(db):
    sessions, who = db
    node_id, alloc_ids = running_jobs(sessions, who, 26, "big")
    few, many = alloc_ids[:2], alloc_ids[2:]
    few_sent = reads_to_report_ends(sessions, who, node_id, few, many, 30.0)
    many_sent = reads_to_report_ends(sessions, who, node_id, many, [], 31.0)
    with sessions() as s:
        for alloc_id in few + many:
            alloc = s.get(m.Allocation, alloc_id)
            assert alloc.state == "exited" and alloc.wall_s == 9.0
            assert s.get(m.Job, alloc.job_id).state == "succeeded"
            assert s.get(m.LedgerMeter, alloc_id).end_at == (30.0 if alloc_id in few else 31.0)
    # 22 more reports: read in bulk, they cost no more reads (one by one, each cost the lookups of its
    # allocation, job and meter: 44 more or so; the writes are batched where the driver can)
    assert many_sent <= few_sent, (few_sent, many_sent)


def allocation_updates_to_report_running(sessions, who: Principal, node_id: str, running: list[str], now: float) -> int:
    with statements_sent(sessions, "UPDATE allocations") as sent, sessions() as s:
        answer = agents.heartbeat(s, who, node_id, running, [], settings(), now)
        s.commit()
    assert len(answer.run) == 26
    return len(sent)


def test_many_attempts_reported_running_at_once_move_in_as_many_statements_as_two(db):
    sessions, who = db
    node_id, alloc_ids = assigned_jobs(sessions, who, 26, "big")
    few, many = alloc_ids[:2], alloc_ids[2:]
    with sessions() as s:
        epoch = s.get(m.Node, node_id).epoch
    few_sent = allocation_updates_to_report_running(sessions, who, node_id, few, 11.0)
    many_sent = allocation_updates_to_report_running(sessions, who, node_id, few + many, 12.0)
    with sessions() as s:
        for alloc_id in few + many:
            alloc = s.get(m.Allocation, alloc_id)
            assert (alloc.state, alloc.started_at) == ("running", 11.0 if alloc_id in few else 12.0)
            assert s.get(m.Job, alloc.job_id).state == "running"
        # what should run there changed once in each heartbeat: one bump each, as the flush gives
        assert s.get(m.Node, node_id).epoch == epoch + 2
    # one compare-and-set for all: one by one, each attempt had its own, and the flush wrote them again (25 for 24)
    assert many_sent == few_sent == 1, (few_sent, many_sent)
