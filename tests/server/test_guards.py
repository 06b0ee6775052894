"""Rate limits and the audit trail, against a real server process."""

import httpx

from ceti.client import CetiError, Client
from tests.conftest import Fabric, make_server


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    # one token per 20 s after a burst of 5: the outcome does not depend on how fast this machine is
    server = make_server(tmp_path, None, CETI_RATE_LIMIT_PER_S="0.05", CETI_RATE_LIMIT_BURST="5")
    server.start()
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        codes = [httpx.get(f"{server.url}/v1/jobs", headers=headers).status_code for _ in range(8)]
        assert codes == [200] * 5 + [429] * 3
        limited = httpx.get(f"{server.url}/v1/jobs", headers=headers)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # another caller (here: no token) is not slowed down by the first one
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop()


def test_admin_actions_and_refused_tokens_are_audited(tmp_path):
    server = make_server(tmp_path, None)
    server.start()
    fabric = Fabric(server, tmp_path)
    try:
        admin = server.admin()
        row = admin.create_token("project", project="audited")
        try:
            Client(server.url, "not-a-token").jobs()
        except CetiError:
            pass
        provider = server.client(fabric.provider_token())
        try:
            provider.submit({"command": ["x"]})
        except CetiError:
            pass
        entries = admin.audit()
        actions = {(e["actor_kind"], e["action"], e["status"]) for e in entries}
        assert ("admin", "POST /v1/tokens", 201) in actions
        assert ("unknown", "GET /v1/jobs", 401) in actions
        assert ("provider", "POST /v1/jobs", 403) in actions
        assert all(e["remote"] == "127.0.0.1" for e in entries)
        assert row["token"] not in str(entries)
    finally:
        fabric.close()
