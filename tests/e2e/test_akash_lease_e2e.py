"""The fabric as a live Akash provider, end to end: a real server configured for Akash, a real agent that offers
its machine to Akash with Podman, and the operator's chain bridge played by the SDK. An order is bid on, the won
lease runs as a container on the agent, and closing the lease stops it (SIGTERM first) and leaves no container.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ceti.agent.containers import EngineConfig
from ceti.agent.engines import probe
from ceti.client import CetiError
from tests.conftest import Fabric, ceti_cmd, make_server, wait_until

pytestmark = pytest.mark.slow

IMAGE = "localhost/ceti-busybox:test"
SDL = f"""
version: "2.0"
services:
  web:
    image: {IMAGE}
    command: ["/bin/sh", "-c"]
    args: ["trap 'echo lease over; exit 0' TERM; echo serving $FABRIC_AKASH_LEASE; while true; do sleep 0.1; done"]
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 0.5}}
        memory: {{size: 128Mi}}
        storage: [{{size: 256Mi}}]
  placement:
    dc:
      attributes: {{region: local}}
      pricing:
        web: {{denom: uakt, amount: 500}}
deployment:
  web:
    dc:
      profile: web
      count: 1
"""
CONFIG = """
akash:
  usd_per_token: {uakt: 3.0}
  block_time_s: 6.0
  pricing:
    scale: {cpu_per_millicore: 0.00004, memory_per_gib: 0.004}
  attributes: {region: local}
"""


@pytest.fixture
def akash_fabric(tmp_path: Path):
    engine = EngineConfig.for_engine("podman", {})
    result = probe(engine, timeout_s=60)
    if not result.ok:
        pytest.skip(f"podman cannot run {IMAGE} here ({result.detail}); run scripts/install-container-deps.sh")
    config = tmp_path / "networks.yaml"
    config.write_text(CONFIG)
    server = make_server(tmp_path, None, CETI_NETWORKS_CONFIG=str(config), CETI_VERIFY_ENABLED="0",
                         CETI_CONTAINER_ENGINE="podman")
    server.start()
    fabric = Fabric(server, tmp_path)
    try:
        yield fabric, engine
    finally:
        # a test that failed mid-lease leaves its service's container running after the agent is gone; only
        # this server's attempts are removed, as another test may run containers of its own at the same time
        try:
            ids = [a["id"] for j in fabric.server.admin().jobs() for a in fabric.server.admin().job(j["id"])
                   .get("allocations", [])]
        except Exception:  # noqa: BLE001  (the server may be down already; nothing to clean then)
            ids = []
        fabric.close()
        for alloc_id in ids:
            subprocess.run(engine.argv("rm", "-f", f"ceti-{alloc_id}"), capture_output=True, timeout=60,
                           check=False)


def logs_of(client, job_id: str) -> str:
    return "".join(c["data"] for c in client.logs(job_id)["chunks"])


def test_an_order_bid_won_run_as_a_container_and_closed(akash_fabric):
    fabric, engine = akash_fabric
    admin = fabric.server.admin()
    with pytest.raises(CetiError) as no_node:
        admin.akash_lease_won("x/1/1/1", "l", SDL)
    assert no_node.value.status == 404

    declined = admin.akash_offer(sdl=SDL, deployment_id="early/1")
    assert declined[0]["state"] == "declined" and "no free node" in declined[0]["reason"]

    agent = fabric.add_agent("provider", extra_args=("--networks", "akash"))
    (order,) = admin.akash_offer(sdl=SDL, deployment_id="tenant/42")
    assert order["order_id"] == "tenant/42/1/1" and order["state"] == "bid_placed", order
    # 500 m CPU x 0.00004 + 0.125 GiB x 0.004 = 0.0205 USD/h; 600 blocks/h at 3 USD/AKT
    assert order["usd_per_hour"] == pytest.approx(0.0205, rel=1e-3)
    assert float(order["bid"]["price_per_block"]) <= 500 and order["bid"]["nodes"] == {"0/0": agent.node_id}

    lease = admin.akash_lease_won(order["order_id"], "tenant/42/1/1/fabric", SDL)
    assert lease["state"] == "active" and len(lease["job_ids"]) == 1
    job_id = lease["job_ids"][0]
    wait_until(lambda: "serving tenant/42/1/1/fabric" in logs_of(admin, job_id), 60, what="the lease's service")
    # the agent ships output before the heartbeat that reports the start: the log may come first
    job = wait_until(lambda: (j := admin.job(job_id))["state"] == "running" and j, 30, what="the job to run")
    assert job["allocations"][-1]["node_id"] == agent.node_id
    allocation = job["allocations"][-1]["id"]
    assert {r["order_id"]: r["state"] for r in admin.akash_leases()} == {
        "tenant/42/1/1": "active", "early/1/1/1": "declined"}

    with pytest.raises(CetiError) as bad:
        admin.akash_lease_won(order["order_id"], "another-lease", SDL)
    assert bad.value.status == 409

    closed = admin.akash_close(order["order_id"], "tenant closed the deployment")
    assert closed["state"] == "closed"
    wait_until(lambda: admin.job(job_id)["state"] == "cancelled", 30, what="the lease's job to stop")
    wait_until(lambda: "lease over" in logs_of(admin, job_id), 10, what="the service's SIGTERM trap")

    def containers_left() -> list[str]:
        names = subprocess.run(engine.argv("ps", "-a", "--format", "{{.Names}}"), capture_output=True, text=True,
                               timeout=30, check=True).stdout.split()
        return [n for n in names if n == f"ceti-{allocation}"]

    wait_until(lambda: not containers_left(), 20, what="the lease's container to be removed")

    # the operator's view from the CLI
    out = subprocess.run(ceti_cmd("networks", "akash", "leases", "--json", "--server", fabric.server.url,
                                  "--token", fabric.server.admin_token),
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["order_id"]: r for r in json.loads(out.stdout)}
    assert rows["tenant/42/1/1"]["state"] == "closed" and rows["tenant/42/1/1"]["job_ids"] == [job_id]
    refused = subprocess.run(ceti_cmd("networks", "akash", "close", "nobody/1/1/1", "--server", fabric.server.url,
                                      "--token", fabric.server.admin_token),
                             check=False, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "no Akash order nobody/1/1/1" in refused.stderr
