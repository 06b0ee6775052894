"""Back-fill and pre-emption end to end: a real server, a real agent, Bittensor's own mock chain.

The operator configures Bittensor (the SDK's MockSubtensor with a demonstration chain, a fixed TAO price, one
hotkey, and a miner command template that runs a stand-in miner: it cannot reach a chain from here). The agent
offers its (recorded 2xT4) node to Bittensor. The idle node gets a miner; a developer job that needs the node
then pre-empts it: the miner gets SIGTERM and its grace period, the developer job starts, and the miner goes
back to the queue, pinned to the node, and runs again when the developer job is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceti.agent.discovery import recorded_inventories
from tests.conftest import Fabric, make_server, wait_until

pytestmark = pytest.mark.slow
HEARTBEAT_S = 2.0  # a production-like interval: the bar is "the developer job starts within two of them"

MINER = ("[sh, -c, 'echo mining subnet {netuid} as {wallet}/{hotkey}; "
         "trap \"echo yielding to paying work; exit 0\" TERM; while true; do sleep 0.05; done']")


@pytest.fixture
def networked_fabric(tmp_path: Path) -> Iterator[Fabric]:
    config = tmp_path / "networks.yaml"
    config.write_text(f"""
bittensor:
  chain: mock
  tao_usd: 400
  wallet: fabric
  hotkeys: [miner-1]
  command: {MINER}
""")
    server = make_server(tmp_path, None, CETI_NETWORKS_CONFIG=str(config), CETI_VERIFY_ENABLED="0")
    server.start()
    f = Fabric(server, tmp_path)
    yield f
    f.close()


def _log(admin, job_id: str) -> str:
    return "".join(c["data"] for c in admin.logs(job_id)["chunks"])


def _network_jobs(admin) -> list[dict]:
    return [j for j in admin.jobs() if j["name"].startswith("bittensor-")]


def test_idle_node_mines_and_yields_to_a_developer_job_at_once(networked_fabric):
    fabric = networked_fabric
    admin = fabric.server.admin()
    agent = fabric.add_agent("gpu-box", inventory=recorded_inventories()["2xT4"],
                             extra_args=("--networks", "bittensor", "--heartbeat-s", str(HEARTBEAT_S)))
    miner = wait_until(lambda: next((j for j in _network_jobs(admin) if j["state"] == "running"), None), 30,
                       what="a Bittensor miner on the idle node")
    assert admin.job(miner["id"])["allocations"][0]["node_id"] == agent.node_id
    wait_until(lambda: "mining subnet" in _log(admin, miner["id"]), 10,
               what="the miner's first log line")

    submitted = time.monotonic()
    dev = admin.submit({"name": "paying", "command": "echo developer work", "priority": 60,
                        "resources": {"gpus": 2, "cpus": 1}})
    started = wait_until(lambda: admin.job(dev["id"])["state"] in ("running", "succeeded") or None, 30,
                         what="the developer job to start")
    waited_s = time.monotonic() - submitted
    print(f"developer job running {waited_s:.2f} s after submit (agent heartbeat {HEARTBEAT_S} s)")
    assert started
    preempted = admin.job(miner["id"])
    first = preempted["allocations"][0]
    assert "preempted" in (first["stop_reason"] or ""), preempted
    wait_until(lambda: "yielding to paying work" in _log(admin, miner["id"]), 10,
               what="the miner to get SIGTERM and its grace period")
    assert admin.wait(dev["id"], timeout_s=30)["state"] == "succeeded"
    # the miner comes back on the node once the developer job is done
    wait_until(lambda: len(admin.job(miner["id"])["allocations"]) >= 2 and admin.job(miner["id"])["state"] == "running"
               or None, 30, what="the miner to run again")
    assert waited_s < 2 * HEARTBEAT_S, waited_s
