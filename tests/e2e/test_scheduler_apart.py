"""A server started with --no-schedule serves agents and developers but never runs a round: the rounds run in
another replica on the same PostgreSQL that is given no traffic, so they never compete with requests for the
serving process's interpreter."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ceti.client import Client
from tests.conftest import AgentProc, ceti_cmd, make_server, reap_leftovers, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def scheduler_state(url: str, admin_token: str) -> dict:
    r = httpx.get(f"{url}/v1/scheduler", headers={"Authorization": f"Bearer {admin_token}"}, timeout=5)
    r.raise_for_status()
    return r.json()


def test_a_serving_replica_never_schedules_and_the_scheduler_apart_runs_its_jobs(tmp_path: Path, postgres):
    url = postgres.new_database()
    serving = make_server(tmp_path / "serving", url, CETI_SCHEDULE="0", CETI_LEADER_LEASE_S="2")
    scheduler = make_server(tmp_path / "scheduler", url, CETI_LEADER_LEASE_S="2")
    agent = None
    try:
        serving.start()  # first: it makes the schema and the admin token, and still never leads
        admin = serving.admin()
        provider = admin.create_token("provider", "test", provider="test")["token"]
        cmd = ceti_cmd("agent", "--server", serving.url, "--token", provider, "--data-dir", str(tmp_path / "a0"),
                       "--heartbeat-s", "0.2", "--hostname", "a0", "--log-level", "info")
        agent = AgentProc("a0", tmp_path / "a0", cmd, dict(serving.env))
        agent.start()
        wait_until(lambda: any(n["state"] == "online" for n in admin.nodes()), 30, what="the agent online")
        dev = Client(serving.url, admin.create_token("project", "dev", project="dev")["token"])
        job_id = dev.submit({"name": "apart", "command": "echo ran-apart"})["id"]

        # alone, the serving replica takes requests but schedules nothing: several lease periods pass
        time.sleep(3 * 2.0)
        assert dev.job(job_id)["state"] == "pending"
        alone = scheduler_state(serving.url, serving.admin_token)
        assert alone["schedules"] is False and alone["leader"] is False and alone["rounds"] == 0

        # the scheduler apart, given no request, runs the job that came in through the serving replica
        scheduler.admin_token = serving.admin_token
        scheduler.start()
        assert dev.wait(job_id, timeout_s=60)["state"] == "succeeded"
        assert "ran-apart" in "".join(c["data"] for c in dev.logs(job_id)["chunks"])
        apart = scheduler_state(scheduler.url, serving.admin_token)
        assert apart["schedules"] is True and apart["leader"] is True and apart["rounds"] > 0
        after = scheduler_state(serving.url, serving.admin_token)
        assert after["leader"] is False and after["rounds"] == 0
    finally:
        if agent:
            agent.stop()
        for server in (serving, scheduler):
            if server.proc is not None:
                server.stop()
        reap_leftovers(tmp_path)


def test_no_schedule_is_refused_on_sqlite(tmp_path: Path):
    """On SQLite the one server must schedule: --no-schedule there would leave every job pending forever."""
    out = subprocess.run(ceti_cmd("server", "--no-schedule", "--data-dir", str(tmp_path / "s"), "--port", "1"),
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "--no-schedule needs PostgreSQL" in out.stderr and "Traceback" not in out.stderr


def test_create_app_refuses_a_server_that_does_not_schedule_on_sqlite(tmp_path: Path):
    from ceti.server.app import create_app
    from ceti.server.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=None, schedule=False)
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        create_app(settings)


def test_an_unknown_placement_is_refused_at_start(tmp_path: Path):
    """CETI_PLACEMENT names how rounds pick nodes; a typo must stop the server, not every round."""
    env = {**os.environ, "CETI_PLACEMENT": "best"}
    out = subprocess.run(ceti_cmd("server", "--data-dir", str(tmp_path / "s"), "--port", "1"),
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert out.returncode == 2
    assert "CETI_PLACEMENT: unknown placement 'best'; known: flow, random" in out.stderr
    assert "Traceback" not in out.stderr
