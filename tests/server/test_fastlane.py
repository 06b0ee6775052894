"""The fast lane serves the hot calls with the same answers, errors and audit trail as their FastAPI routes, and
hands odd input to those routes."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ceti.server import fastlane
from ceti.server.app import create_app
from ceti.server.settings import Settings, VerifySettings
from ceti.store import models as m
from tests.dashboard.inprocess import Plane


@pytest.fixture
def p(tmp_path, database_url):
    settings = Settings(data_dir=tmp_path / "server", database_url=database_url, verify=VerifySettings(enabled=False))
    app = create_app(settings, admin_token_file=tmp_path / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Plane(client, (tmp_path / "admin-token").read_text().strip())


def served_by(plane: Plane, monkeypatch, method: str, path: str, token: str | None, **kw):
    """(status, body, whether the fast lane answered)."""
    calls = []
    real = fastlane._Lane._run

    def spy(self, *args):
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(fastlane._Lane, "_run", spy)
    headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    r = plane.http.request(method, path, headers=headers, **kw)
    monkeypatch.setattr(fastlane._Lane, "_run", real)
    return r.status_code, r.json(), bool(calls)


def test_hot_calls_go_through_the_lane_with_the_routes_answers(p, monkeypatch):
    prov = p.token("provider", provider="p")
    proj = p.token("project", project="x")
    node = p.node(prov, "h1", "eu")
    status, body, fast = served_by(p, monkeypatch, "POST", f"/v1/agent/nodes/{node}/heartbeat", prov,
                                   json={"running": [], "finished": []})
    assert (status, fast) == (200, True)
    assert set(body) == {"node_state", "epoch", "run", "stop", "verify", "unchanged"} and body["unchanged"] is False
    status, body, fast = served_by(p, monkeypatch, "POST", "/v1/jobs", proj, json={"name": "j", "command": ["true"]},
                                   headers={"Idempotency-Key": "k1"})
    assert (status, fast) == (201, True) and body["state"] == "pending" and body["node_id"] is None
    status, again, _ = served_by(p, monkeypatch, "POST", "/v1/jobs", proj, json={"name": "j", "command": ["true"]},
                                 headers={"Idempotency-Key": "k1"})
    assert status == 200 and again["id"] == body["id"]  # the same job, not a second one
    p.round()
    placed = p.ok("POST", f"/v1/agent/nodes/{node}/heartbeat", prov, json={"running": [], "finished": []})
    alloc = placed["run"][0]["allocation_id"]
    status, body, fast = served_by(p, monkeypatch, "POST", f"/v1/agent/allocations/{alloc}/logs", prov,
                                   json={"chunks": [{"stream": "stdout", "offset": 0, "data": "hi\n"}]})
    assert (status, body, fast) == (200, {"accepted": 1, "duplicates": 0, "truncated": False}, True)


def test_errors_are_the_routes_errors(p, monkeypatch):
    prov = p.token("provider", provider="p")
    other = p.token("provider", provider="q")
    node = p.node(prov, "h1", "eu")
    beat = f"/v1/agent/nodes/{node}/heartbeat"
    status, body, _ = served_by(p, monkeypatch, "POST", beat, None, json={"running": []})
    assert status == 401 and body == {"detail": "missing bearer token"}
    status, body, _ = served_by(p, monkeypatch, "POST", beat, other, json={"running": []})
    assert status == 403 and "own nodes" in body["detail"]
    status, body, _ = served_by(p, monkeypatch, "POST", "/v1/agent/nodes/nope/heartbeat", prov, json={"running": []})
    assert status == 404 and body["detail"] == "no node nope"
    status, body, _ = served_by(p, monkeypatch, "POST", "/v1/jobs", p.token("project", project="x"),
                                json={"name": "j", "command": ["true"], "resources": {"gpus": -1}})
    assert status == 422 and body["errors"] and body["errors"][0]["path"].startswith("resources")
    with p.http.app.state.sessions() as s:  # refused token uses reach the audit trail, as on every route
        refused = s.scalars(select(m.AuditEntry).where(m.AuditEntry.status.in_((401, 403)))).all()
    assert {e.action for e in refused} == {f"POST {beat}"} and len(refused) == 2


@pytest.mark.parametrize("kw", [
    {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
    {"content": json.dumps({"running": "x"}).encode(), "headers": {"Content-Type": "application/json"}},
    {"content": b"running=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    {"json": {"running": [], "unknown_field": 1}},
])
def test_odd_input_is_handed_to_the_route(p, monkeypatch, kw):
    prov = p.token("provider", provider="p")
    node = p.node(prov, "h1", "eu")
    status, body, fast = served_by(p, monkeypatch, "POST", f"/v1/agent/nodes/{node}/heartbeat", prov, **kw)
    assert status == 422 and not fast
    assert body["detail"] and isinstance(body["errors"], list)


def test_an_overlong_idempotency_key_is_refused_by_the_route(p, monkeypatch):
    proj = p.token("project", project="x")
    status, body, fast = served_by(p, monkeypatch, "POST", "/v1/jobs", proj, json={"name": "j", "command": ["true"]},
                                   headers={"Idempotency-Key": "k" * 129})
    assert status == 422 and not fast and "idempotency" in body["detail"].lower()


def test_fast_routes_stay_out_of_the_schema(p):
    paths = p.http.get("/openapi.json").json()["paths"]
    heartbeat = paths["/v1/agent/nodes/{node_id}/heartbeat"]["post"]
    assert heartbeat["requestBody"] and "200" in heartbeat["responses"]  # the FastAPI route's documentation


def test_quiet_heartbeats_are_answered_by_the_quiet_reader_with_the_same_rules(p, monkeypatch):
    from ceti.server.background.heartbeat_clock import HeartbeatClock

    state = p.http.app.state
    clock = state.heartbeat_clock = HeartbeatClock(state.sessions)  # as when the background work runs
    state.quiet_reader = fastlane.QuietReader(state.engine, state.settings, clock)
    prov, other = p.token("provider", provider="p"), p.token("provider", provider="q")
    node = p.node(prov, "h1", "eu")
    epoch = p.heartbeat(prov, node)["epoch"]
    beat = f"/v1/agent/nodes/{node}/heartbeat"
    status, body, through_session = served_by(p, monkeypatch, "POST", beat, prov,
                                              json={"running": [], "finished": [], "epoch": epoch})
    assert (status, body["unchanged"], body["epoch"], through_session) == (200, True, epoch, False)
    assert clock.flush() == 1  # its time was noted, to be written in the next batch
    # whatever is not plainly quiet goes to the full path and gets its usual answer
    assert served_by(p, monkeypatch, "POST", beat, other, json={"running": [], "epoch": epoch})[:1] == (403,)
    status, body, through_session = served_by(p, monkeypatch, "POST", beat, prov,
                                              json={"running": ["ghost"], "epoch": epoch})
    assert (status, body["unchanged"], through_session) == (200, False, True)
    status, body, through_session = served_by(p, monkeypatch, "POST", beat, prov, json={"running": [], "epoch": 0})
    assert (body["unchanged"], through_session) == (epoch == 0, epoch != 0)
    p.ok("DELETE", f"/v1/tokens/{_token_id(p, prov)}")  # revocation holds on the very next heartbeat
    status, _, _ = served_by(p, monkeypatch, "POST", beat, prov, json={"running": [], "epoch": epoch})
    assert status == 401


def _token_id(p, secret: str) -> str:
    from ceti.server.services.tokens import hash_token

    with p.http.app.state.sessions() as s:
        return s.scalar(select(m.Token.id).where(m.Token.token_hash == hash_token(secret)))


def test_a_failing_quiet_read_leaves_the_answer_to_the_full_path(p, monkeypatch):
    from ceti.server.background.heartbeat_clock import HeartbeatClock

    state = p.http.app.state
    clock = state.heartbeat_clock = HeartbeatClock(state.sessions)
    state.quiet_reader = fastlane.QuietReader(state.engine, state.settings, clock)
    prov = p.token("provider", provider="p")
    node = p.node(prov, "h1", "eu")
    epoch = p.heartbeat(prov, node)["epoch"]

    def broken(*_args, **_kw):
        raise OSError("disk gone")

    async def broken_async(*_args, **_kw):
        raise OSError("connection reset")

    monkeypatch.setattr(fastlane, "quiet_heartbeat_sql", broken)
    monkeypatch.setattr(fastlane, "quiet_heartbeat_sql_async", broken_async)
    status, body, through_session = served_by(p, monkeypatch, "POST", f"/v1/agent/nodes/{node}/heartbeat", prov,
                                              json={"running": [], "epoch": epoch})
    assert (status, body["unchanged"], through_session) == (200, True, True)
