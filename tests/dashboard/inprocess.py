"""An in-process control plane for the fast dashboard and metrics tests: the real app, no network, no threads.

The scheduling loop does not run by itself here; `round()` runs one round, so a test decides when placement
happens.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from ceti.server.app import create_app
from ceti.server.settings import Settings
from ceti.spec import GPUInfo, NodeInfo


class Plane:
    def __init__(self, client: TestClient, admin_token: str):
        self.http = client
        self.admin_token = admin_token

    def call(self, method: str, path: str, token: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {token or self.admin_token}"} if token != "" else {}
        return self.http.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, token: str | None = None, **kw):
        r = self.call(method, path, token, **kw)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json()

    def token(self, kind: str, **kw) -> str:
        return self.ok("POST", "/v1/tokens", json={"kind": kind, **kw})["token"]

    def node(self, provider_token: str, hostname: str, region: str, gpus: list[tuple[str, int]] = (),
             price_per_gpu_hour: float = 1.0) -> str:
        info = NodeInfo(hostname=hostname, cpus=8, memory_mib=32768, region=region,
                        price_per_gpu_hour=price_per_gpu_hour,
                        gpus=[GPUInfo(index=i, model=m, vram_mib=v) for i, (m, v) in enumerate(gpus)])
        body = {"info": info.model_dump(mode="json")}
        return self.ok("POST", "/v1/agent/register", provider_token, json=body)["node_id"]

    def heartbeat(self, provider_token: str, node_id: str, running=(), finished=()):
        return self.ok("POST", f"/v1/agent/nodes/{node_id}/heartbeat", provider_token,
                       json={"running": list(running), "finished": list(finished)})

    def round(self):
        return self.http.app.state.scheduler.run_once()


@contextmanager
def plane(tmp: Path):
    settings = Settings(data_dir=tmp / "server", database_url=None)
    app = create_app(settings, admin_token_file=tmp / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Plane(client, (tmp / "admin-token").read_text().strip())
