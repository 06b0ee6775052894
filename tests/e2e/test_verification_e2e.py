"""Proof of hardware end to end: a real server and two real agents on loopback.

An honest CPU agent is challenged at registration, answers, is `verified`, and priced work runs there. An agent
that claims eight H100s from a recorded NVML description (it is this CPU) is never `verified`, and priced work
never goes there. Challenge sizes are capped through the server's settings so the test stays short.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceti.agent.discovery import recorded_inventories
from tests.conftest import Fabric, make_server, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def verifying_fabric(tmp_path: Path) -> Iterator[Fabric]:
    server = make_server(tmp_path, None, CETI_VERIFY_BUDGET_MIB="16", CETI_VERIFY_OVERHEAD_S="0.3")
    server.start()
    f = Fabric(server, tmp_path)
    yield f
    f.close()


def _node(admin, node_id: str) -> dict:
    return next(n for n in admin.nodes() if n["id"] == node_id)


def test_honest_cpu_node_is_verified_and_a_fake_h100_node_never_is(verifying_fabric):
    fabric = verifying_fabric
    admin = fabric.server.admin()
    honest = fabric.add_agent("honest")
    fake = fabric.add_agent("fake-h100", inventory=recorded_inventories()["8xH100-80GB-SXM"],
                            price_per_gpu_hour=8.0)

    wait_until(lambda: _node(admin, honest.node_id)["verdict"], 30, what="a verdict on the honest node")
    wait_until(lambda: _node(admin, fake.node_id)["verdict"], 30, what="a verdict on the H100 claim")
    good, bad = _node(admin, honest.node_id), _node(admin, fake.node_id)
    history = admin._request("GET", f"/v1/nodes/{fake.node_id}/verifications")
    assert good["verdict"] == "verified", admin._request("GET", f"/v1/nodes/{honest.node_id}/verifications")
    assert good["model_estimate"] == "cpu"
    assert bad["verdict"] in ("mismatch", "failed"), history
    assert history[0]["evidence"] and history[0]["reason"]

    # priced work needs a verified node: the CPU job runs on the honest node, the GPU job finds none
    paid_cpu = admin.submit({"name": "paid-cpu", "command": "echo paid", "max_price_per_hour": 5.0})
    paid_gpu = admin.submit({"name": "paid-gpu", "command": "echo gpu", "max_price_per_hour": 100.0,
                             "resources": {"gpus": {"count": 1}}})
    done = admin.wait(paid_cpu["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["allocations"][0]["node_id"] == honest.node_id
    time.sleep(1.0)  # several scheduling rounds
    waiting = admin.job(paid_gpu["id"])
    assert waiting["state"] in ("pending", "unschedulable") and not waiting["allocations"], waiting

    # a job that opts out of proof of hardware may use the unverified node
    free = admin.submit({"name": "any-gpu", "command": "echo any", "placement": {"verified": False},
                         "resources": {"gpus": {"count": 1}}})
    done = admin.wait(free["id"], timeout_s=30)
    assert done["state"] == "succeeded" and done["allocations"][0]["node_id"] == fake.node_id
    assert _node(admin, fake.node_id)["verdict"] != "verified"
