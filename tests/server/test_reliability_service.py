"""Reliability from the store, through the API and into placement.

Two hours of history are played through the services with the clock passed in (heartbeats, lost-node
detection), ending just before the real clock, so the API (which reads the real clock) sees them in its window.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ceti.server.app import create_app
from ceti.server.services import agents, jobs, lost_nodes, reliability, scheduling
from ceti.server.services.tokens import Principal, ensure_provider
from ceti.server.settings import Settings
from ceti.spec import GPUInfo, NodeInfo, parse_job_spec
from ceti.store import models as m
from tests.dashboard.inprocess import Plane

ADMIN = Principal("t", "admin")
STEP_S = 20.0
LOST_AFTER_S = 30.0


@contextmanager
def plane(tmp: Path):
    settings = Settings(data_dir=tmp / "server", database_url=None)
    settings.node_lost_after_s = LOST_AFTER_S
    app = create_app(settings, admin_token_file=tmp / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Plane(client, (tmp / "admin-token").read_text().strip()), app.state.sessions, settings


def register(s, who: Principal, name: str, price: float, now: float) -> str:
    info = NodeInfo(hostname=name, cpus=8, memory_mib=32768, price_per_gpu_hour=price,
                    gpus=[GPUInfo(index=0, model="A100-40GB", vram_mib=40960)])
    return agents.register(s, who, info, None, now).id


def play_history(sessions, settings, start: float, end: float) -> tuple[str, str]:
    """A steady node and a cheaper one that drops out for a minute every five minutes."""
    with sessions() as s:
        who = Principal("pt", "provider", provider_id=ensure_provider(s, "acme", start).id)
        steady = register(s, who, "steady", 2.0, start)
        flaky = register(s, who, "flaky", 1.0, start)
        s.commit()
        t = start
        while t < end:
            agents.heartbeat(s, who, steady, [], [], settings, t)
            if (t - start) % 300 < 240:  # silent for the last minute of every five
                agents.heartbeat(s, who, flaky, [], [], settings, t)
            lost_nodes.sweep(s, settings, t)
            s.commit()
            t += STEP_S
        agents.heartbeat(s, who, flaky, [], [], settings, t)  # both online at the end
        agents.heartbeat(s, who, steady, [], [], settings, t)
        s.commit()
    return steady, flaky


def submit(s, name: str, max_duration: str) -> str:
    doc = {"name": name, "command": ["x"], "resources": {"gpus": 1}, "max_duration": max_duration}
    return jobs.submit(s, ADMIN, parse_job_spec(doc), time.time(), None, 1000)[0].id


def placed_on(s, job_id: str) -> str:
    return s.query(m.Allocation).filter(m.Allocation.job_id == job_id).one().node_id


def test_a_flapping_node_scores_lower_and_long_work_goes_to_the_steady_one(tmp_path: Path) -> None:
    end = time.time() - 5.0
    with plane(tmp_path) as (p, sessions, settings):
        steady, flaky = play_history(sessions, settings, end - 2 * 3600, end)
        with sessions() as s:
            scores = reliability.node_reliability(s, end + 1)
        assert scores[flaky].drops >= 20 and scores[steady].drops == 0
        assert scores[flaky].score < scores[steady].score

        listed = {n["hostname"]: n for n in p.ok("GET", "/v1/nodes")}
        assert listed["flaky"]["reliability"] < listed["steady"]["reliability"]
        for n in listed.values():
            assert 0.0 < n["reliability_low"] < n["reliability"] < 1.0
        one = p.ok("GET", f"/v1/nodes/{flaky}")
        assert one["reliability"] == pytest.approx(listed["flaky"]["reliability"], abs=1e-3)  # the clock moved
        page = p.ok("GET", f"/v1/dashboard/nodes/{steady}")
        assert page["reliability"] == pytest.approx(listed["steady"]["reliability"], abs=1e-3)

        # the snapshot carries the scores into the fabric
        with sessions() as s:
            snap = scheduling.build_snapshot(s, time.time())
        by_id = {n.id: n.reliability for n in snap.nodes}
        assert by_id[flaky] < by_id[steady]

        # a day-long job and a five-minute job at once: each where it is worth most (the flaky node is cheaper)
        with sessions() as s:
            long_job = submit(s, "long", "24h")
            short_job = submit(s, "short", "5m")
            s.commit()
        p.round()
        with sessions() as s:
            assert placed_on(s, long_job) == steady
            assert placed_on(s, short_job) == flaky


def test_a_long_job_alone_pays_more_for_the_steady_node_a_short_one_takes_the_cheap_one(tmp_path: Path) -> None:
    end = time.time() - 5.0
    with plane(tmp_path) as (p, sessions, settings):
        steady, flaky = play_history(sessions, settings, end - 2 * 3600, end)
        with sessions() as s:
            short_job = submit(s, "short", "3m")
            s.commit()
        p.round()
        with sessions() as s:
            assert placed_on(s, short_job) == flaky  # a short job may use the flaky node: it is cheaper
        p.ok("POST", f"/v1/jobs/{short_job}/cancel")
        with sessions() as s:
            long_job = submit(s, "long", "12h")
            s.commit()
        p.round()
        with sessions() as s:
            assert placed_on(s, long_job) == steady


def test_scores_need_a_few_queries_not_one_per_node(tmp_path: Path) -> None:
    from sqlalchemy import event

    end = time.time() - 5.0
    with plane(tmp_path) as (_, sessions, settings):
        play_history(sessions, settings, end - 600, end)
        with sessions() as s:
            who = Principal("pt", "provider", provider_id=ensure_provider(s, "acme", end).id)
            for i in range(30):
                register(s, who, f"n{i}", 1.0, end)
            s.commit()
            statements: list[str] = []
            engine = s.get_bind()
            event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
            got = reliability.node_reliability(s, end + 1)
        assert len(got) == 32 and len(statements) <= 3
