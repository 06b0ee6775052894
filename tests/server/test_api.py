"""The REST API over loopback against a real `ceti server` process: auth, isolation, bad input."""

import httpx
import pytest

from ceti.client import CetiError, Client
from ceti.spec import GPUInfo, NodeInfo

HELLO = {"name": "hello", "command": ["echo", "hi"]}


def test_tokens_are_stored_hashed_and_bad_tokens_are_refused(sqlite_fabric):
    server = sqlite_fabric.server
    assert server.admin().whoami()["kind"] == "admin"
    for bad in ("", "nonsense", server.admin_token + "x"):
        with pytest.raises(CetiError) as info:
            Client(server.url, bad or None).jobs()
        assert info.value.status == 401
    import sqlite3

    db = sqlite3.connect(server.data_dir / "ceti.db")
    stored = [row[0] for row in db.execute("select token_hash from tokens")]
    assert server.admin_token not in stored and len(stored[0]) == 64


def test_a_project_never_sees_or_changes_another_projects_jobs(sqlite_fabric):
    server = sqlite_fabric.server
    alice = server.client(sqlite_fabric.project_token("alice"))
    bob = server.client(sqlite_fabric.project_token("bob"))
    job = alice.submit(HELLO)
    assert [j["id"] for j in alice.jobs()] == [job["id"]]
    assert bob.jobs() == []
    for call in (bob.job, bob.cancel, bob.logs, bob.events):
        with pytest.raises(CetiError) as info:
            call(job["id"])
        assert info.value.status == 404
    assert alice.job(job["id"])["state"] != "cancelled"
    assert server.admin().job(job["id"])["id"] == job["id"]


def test_provider_tokens_act_only_on_their_own_nodes(sqlite_fabric):
    admin = sqlite_fabric.server.admin()
    p1 = sqlite_fabric.server.client(admin.create_token("provider", provider="p1")["token"])
    p2 = sqlite_fabric.server.client(admin.create_token("provider", provider="p2")["token"])
    info = NodeInfo(hostname="h", cpus=2, memory_mib=1024)
    node_id = p1.register_node(info)["node_id"]
    with pytest.raises(CetiError) as refused:
        p2.heartbeat(node_id, [], [])
    assert refused.value.status == 403
    with pytest.raises(CetiError) as hijack:
        p2.register_node(info, node_id)
    assert hijack.value.status == 403
    with pytest.raises(CetiError) as cannot_submit:
        p1.submit(HELLO)
    assert cannot_submit.value.status == 403
    assert [n["id"] for n in p2.nodes()] == []


def test_revocation_takes_effect_on_the_next_request(sqlite_fabric):
    admin = sqlite_fabric.server.admin()
    row = admin.create_token("project", project="carol")
    carol = sqlite_fabric.server.client(row["token"])
    carol.jobs()
    admin.revoke_token(row["id"])
    with pytest.raises(CetiError) as info:
        carol.jobs()
    assert info.value.status == 401


def test_idempotent_submit_creates_one_job(sqlite_fabric):
    client = sqlite_fabric.server.client(sqlite_fabric.project_token("dave"))
    first = client.submit(HELLO, idempotency_key="k-1")
    again = client.submit(HELLO, idempotency_key="k-1")
    assert first["id"] == again["id"] and len(client.jobs()) == 1
    with pytest.raises(CetiError) as info:
        client.submit({**HELLO, "name": "other"}, idempotency_key="k-1")
    assert info.value.status == 409


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"command": ["x"], "bogus": True}, 422, "bogus"),
        ({"command": ["x"], "resources": {"gpus": {"count": "two"}}}, 422, "resources.gpus.count"),
        ({"name": "x"}, 422, "command"),
        (["not", "a", "mapping"], 422, ""),
    ],
)
def test_bad_job_specs_get_4xx_and_change_nothing(sqlite_fabric, body, status, words):
    admin = sqlite_fabric.server.admin()
    response = httpx.post(f"{sqlite_fabric.server.url}/v1/jobs", json=body,
                          headers={"Authorization": f"Bearer {sqlite_fabric.server.admin_token}"})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert admin.jobs() == []


def test_oversized_and_malformed_bodies(sqlite_fabric):
    url, token = sqlite_fabric.server.url, sqlite_fabric.server.admin_token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    big = httpx.post(f"{url}/v1/jobs", content=b"{" + b" " * (3 * 1024 * 1024) + b"}", headers=headers)
    assert big.status_code == 413
    broken = httpx.post(f"{url}/v1/jobs", content=b"{not json", headers=headers)
    assert broken.status_code == 422
    assert sqlite_fabric.server.admin().jobs() == []


def test_impossible_job_is_unschedulable_with_a_reason(sqlite_fabric):
    admin = sqlite_fabric.server.admin()
    provider = sqlite_fabric.server.client(sqlite_fabric.provider_token())
    gpus = [GPUInfo(index=i, model="T4", vram_mib=15360) for i in range(2)]
    provider.register_node(NodeInfo(hostname="h", cpus=4, memory_mib=8192, gpus=gpus))
    job = admin.submit({"command": ["x"], "resources": {"gpus": 64}})
    done = admin.wait(job["id"], timeout_s=10)
    assert done["state"] == "unschedulable" and "gpu" in done["reason"].lower()


def test_log_limits_are_reported_not_silent(tmp_path):
    from tests.conftest import Fabric, make_server

    server = make_server(tmp_path, None, CETI_MAX_LOG_BYTES_PER_JOB="10", CETI_MAX_LOG_CHUNK_BYTES="8")
    server.start()
    fabric = Fabric(server, tmp_path)
    try:
        admin = server.admin()
        provider = server.client(fabric.provider_token())
        node_id = provider.register_node(NodeInfo(hostname="h", cpus=2, memory_mib=2048))["node_id"]
        job = admin.submit(HELLO)
        alloc = None
        for _ in range(50):
            run = provider.heartbeat(node_id, [], [])["run"]
            if run:
                alloc = run[0]["allocation_id"]
                break
            import time

            time.sleep(0.1)
        with pytest.raises(CetiError) as too_big:
            provider.upload_logs(alloc, [{"stream": "stdout", "offset": 0, "data": "123456789"}])
        assert too_big.value.status == 413
        assert provider.upload_logs(alloc, [{"stream": "stdout", "offset": 0, "data": "1234567"}])["accepted"] == 1
        out = provider.upload_logs(alloc, [{"stream": "stdout", "offset": 7, "data": "abcdefg"}])
        assert out == {"accepted": 0, "duplicates": 0, "truncated": True}
        assert admin.logs(job["id"])["truncated"] is True
        assert any(e["kind"] == "logs_truncated" for e in admin.events(job["id"]))
    finally:
        fabric.close()


def test_short_ids_from_the_cli_tables_resolve_within_what_the_caller_sees(sqlite_fabric):
    alice = sqlite_fabric.server.client(sqlite_fabric.project_token("alice"))
    bob = sqlite_fabric.server.client(sqlite_fabric.project_token("bob"))
    job = alice.submit(HELLO)
    assert alice.job(job["id"][:8])["id"] == job["id"]
    with pytest.raises(CetiError) as info:
        bob.job(job["id"][:8])
    assert info.value.status == 404
