"""Faults, survived: kill -9 of the server at its worst moments, an agent cut off past the lost-node timeout,
the database going away under load, a client retrying a submit. After each, the invariant checker runs."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from ceti.client import CetiError
from tests.conftest import wait_until
from tests.e2e.invariants import check_invariants

pytestmark = pytest.mark.slow


def restart_with(server, crash_at: str | None) -> None:
    server.stop()
    if crash_at:
        server.env["CETI_FAULT_CRASH_AT"] = crash_at
    else:
        server.env.pop("CETI_FAULT_CRASH_AT", None)
    server.proc = None
    try:
        server.start()
    except AssertionError:
        if not (crash_at and server.proc.returncode == -signal.SIGKILL):
            raise  # it may hit its crash point before answering its first health check; nothing else may


def test_server_killed_between_decisions_and_commit(fabric):
    fabric.add_agent("a1")
    restart_with(fabric.server, "round_before_commit")
    admin = fabric.server.admin()
    job = admin.submit({"name": "once", "command": "echo ran-once"})
    wait_until(lambda: fabric.server.proc.poll() is not None, 20, what="the server to die mid-round")
    assert fabric.server.proc.returncode == -signal.SIGKILL
    # the round left nothing half-applied: the uncommitted placement never happened
    assert check_invariants(fabric.server.db_url)["allocations"] == 0
    restart_with(fabric.server, None)
    admin = fabric.server.admin()
    done = admin.wait(job["id"], timeout_s=30)
    assert done["state"] == "succeeded" and len(done["allocations"]) == 1
    assert "".join(c["data"] for c in admin.logs(job["id"])["chunks"]).count("ran-once") == 1
    check_invariants(fabric.server.db_url)


def test_server_killed_during_log_upload(fabric):
    agent = fabric.add_agent("a1")
    admin = fabric.server.admin()
    job = admin.submit({"name": "talk", "command": "sleep 1; for i in $(seq 1 50); do echo line-$i; done; sleep 1"})
    wait_until(lambda: admin.job(job["id"])["state"] == "running", 20, what="job running")
    restart_with(fabric.server, "log_upload_before_commit")
    wait_until(lambda: fabric.server.proc.poll() is not None, 20, what="the server to die during an upload")
    check_invariants(fabric.server.db_url)
    restart_with(fabric.server, None)
    admin = fabric.server.admin()
    done = admin.wait(job["id"], timeout_s=30)
    assert done["state"] == "succeeded", done
    lines = [x for x in "".join(c["data"] for c in admin.logs(job["id"])["chunks"]).splitlines()]
    assert lines == [f"line-{i}" for i in range(1, 51)]  # each line exactly once, in order
    check_invariants(fabric.server.db_url)
    assert agent.proc.poll() is None  # the agent rode it out


def test_agent_cut_off_past_the_lost_timeout_stops_its_old_copy_when_back(fabric):
    a1 = fabric.add_agent("a1")
    admin = fabric.server.admin()
    job = admin.submit({"name": "moved", "command": "echo start; sleep 12; echo end",
                        "retry": {"limit": 2, "on": ["node_lost"]}})
    wait_until(lambda: admin.job(job["id"])["state"] == "running", 20, what="job running")
    first = admin.job(job["id"])["allocations"][0]
    old_pids = [p.pid for p in psutil.process_iter() if _alloc_of(p) == first["id"]]
    assert old_pids
    os.kill(a1.proc.pid, signal.SIGSTOP)  # cut off: it sends nothing, its job keeps running
    try:
        wait_until(lambda: admin.job(job["id"])["allocations"][0]["state"] == "lost", 20, what="node lost")
        fabric.add_agent("a2")
        wait_until(lambda: admin.job(job["id"])["state"] == "running", 20, what="job running again on a2")
    finally:
        os.kill(a1.proc.pid, signal.SIGCONT)
    # back: the server no longer wants the old attempt there, so the agent stops it (well before its 12 s end)
    wait_until(lambda: not any(_alive(p) for p in old_pids), 5, what="the old copy to stop")
    done = admin.wait(job["id"], timeout_s=60)
    assert done["state"] == "succeeded"
    assert [a["state"] for a in done["allocations"]] == ["lost", "exited"]
    check_invariants(fabric.server.db_url)


def _alloc_of(p: psutil.Process) -> str | None:
    try:
        return p.environ().get("CETI_ALLOCATION_ID")
    except (psutil.Error, OSError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_retried_submit_after_a_lost_answer_creates_one_job(fabric):
    restart_with(fabric.server, "submit_after_commit")
    client = fabric.server.admin()
    spec = {"name": "once", "command": "true"}
    with pytest.raises(CetiError) as lost:
        client.submit(spec, idempotency_key="retry-me")
    assert lost.value.status == 0  # the job was committed, then the answer was lost
    restart_with(fabric.server, None)
    again = fabric.server.admin().submit(spec, idempotency_key="retry-me")
    assert [j["id"] for j in fabric.server.admin().jobs()] == [again["id"]]
    check_invariants(fabric.server.db_url)


@pytest.mark.postgres
def test_postgres_down_for_30s_under_load(tmp_path, postgres):
    from tests.conftest import Fabric, make_server

    server = make_server(tmp_path, postgres.new_database())
    server.start()
    fabric = Fabric(server, tmp_path)
    try:
        fabric.add_agent("a1")
        admin = server.admin()
        before = [admin.submit({"name": f"b{i}", "command": "sleep 2; echo ok"})["id"] for i in range(3)]
        postgres.stop("fast")
        try:
            down_since = time.monotonic()
            wait_until(lambda: _health(server) == 503, 15, what="the server to report unhealthy")
            refused = 0
            while time.monotonic() - down_since < 30:  # bounded: 30 s of load against a missing database
                try:
                    admin.submit({"name": "during", "command": "true"})
                except CetiError as exc:
                    assert exc.status in (0, 503), exc.message  # never a 500, never half-applied
                    refused += 1
                time.sleep(0.5)
            assert refused > 0
        finally:
            postgres.start()
        wait_until(lambda: _health(server) == 200, 30, what="the server to recover without a restart")
        after = admin.submit({"name": "after", "command": "echo back"})["id"]
        for job_id in [*before, after]:
            assert admin.wait(job_id, timeout_s=60)["state"] == "succeeded"
        assert not [j for j in admin.jobs(limit=1000) if j["name"] == "during"]
        check_invariants(server.db_url)
    finally:
        fabric.close()


def _health(server) -> int:
    import httpx

    try:
        return httpx.get(f"{server.url}/healthz", timeout=5).status_code
    except httpx.HTTPError:
        return 0
