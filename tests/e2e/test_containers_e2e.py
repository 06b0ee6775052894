"""A job that names an image, end to end: real server and agent processes on loopback, real Podman.

The job waits, pending with the reason, while the only agent has no container engine; an agent started with
containers on (CETI_CONTAINER_ENGINE=podman: it runs a test container before it reports the engine) takes it.
"""

from __future__ import annotations

import subprocess

import pytest

from ceti.agent.containers import EngineConfig
from ceti.agent.engines import probe
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

IMAGE = "localhost/ceti-busybox:test"


@pytest.fixture(scope="module")
def podman() -> EngineConfig:
    engine = EngineConfig.for_engine("podman", {})
    result = probe(engine, timeout_s=60)
    if not result.ok:
        pytest.skip(
            f"podman cannot run {IMAGE} here ({result.detail}); run scripts/install-container-deps.sh as root"
        )
    return engine


def test_an_image_job_waits_for_a_container_node_then_runs_there(sqlite_fabric, podman, monkeypatch):
    fabric = sqlite_fabric
    fabric.add_agent("plain")  # containers off: the default
    nodes = {n["hostname"]: n for n in fabric.server.admin().nodes()}
    assert nodes["plain"]["info"]["container_engines"] == []

    dev = fabric.server.client(fabric.project_token("p"))
    spec = {
        "name": "boxed", "image": IMAGE,
        "command": "echo \"hello from $GREETING in $(pwd)\"; cat data.txt; exit 4",
        "env": {"GREETING": "a container"}, "files": {"data.txt": "file content\n"},
        "resources": {"cpus": 1, "memory": "128Mi"},
    }  # fmt: skip
    job = dev.submit(spec)
    waiting = wait_until(lambda: (j := dev.job(job["id"]))["reason"] and j, 20, what="a reason why it waits")
    # The scheduler gives up on it ("unschedulable") as no registered node could ever take it; were that policy
    # to keep such jobs pending until a node with the feature joins, the reason would be the same.
    assert waiting["state"] in ("pending", "unschedulable") and waiting["allocations"] == []
    assert waiting["reason"] == "needs a node with container; none has it", waiting

    monkeypatch.setitem(fabric.server.env, "CETI_CONTAINER_ENGINE", "podman")
    agent = fabric.add_agent("boxes")
    if waiting["state"] == "unschedulable":
        job = dev.submit(spec)
    node = next(n for n in fabric.server.admin().nodes() if n["hostname"] == "boxes")
    assert node["info"]["container_engines"] == ["podman"]

    done = wait_until(
        lambda: (j := dev.job(job["id"]))["state"] in ("succeeded", "failed") and j,
        60,
        what="the container job to end",
    )
    assert done["state"] == "failed" and done["exit_code"] == 4, done
    assert done["allocations"][-1]["node_id"] == agent.node_id
    text = logs_of(dev, job["id"])
    assert "a container in /work" in text and "file content" in text, text

    # cancel: the agent stops the container through the engine, SIGTERM first
    sleeper = dev.submit(
        {
            "name": "sleeper",
            "image": IMAGE,
            "command": "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done",
        }
    )
    wait_until(lambda: "up" in logs_of(dev, sleeper["id"]), 30, what="the sleeper to start")
    dev.cancel(sleeper["id"])
    ended = wait_until(
        lambda: (j := dev.job(sleeper["id"]))["state"] == "cancelled" and j, 30, what="the cancel"
    )
    assert ended["allocations"][-1]["node_id"] == agent.node_id
    wait_until(lambda: "got TERM" in logs_of(dev, sleeper["id"]), 10, what="the trap's output")

    left = subprocess.run(
        podman.argv("ps", "-a", "--format", "{{.Names}}"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert [n for n in left if n.startswith("ceti-") and not n.startswith("ceti-probe")] == []


def logs_of(client, job_id: str) -> str:
    return "".join(c["data"] for c in client.logs(job_id)["chunks"])
