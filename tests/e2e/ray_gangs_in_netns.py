"""Multi-node jobs on Ray with real server and agent processes. Runs only inside a network namespace made by
`test_ray_gangs_e2e.py` (there loopback is the only interface, so Ray cannot advertise any other address); the
file name keeps the suite's own collection away from it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Fabric, make_server, wait_until

pytestmark = pytest.mark.skipif(os.environ.get("CETI_TEST_IN_NETNS") != "1",
                                reason="runs inside the network namespace test_ray_gangs_e2e.py makes")

# On the head, with RAY_ADDRESS set by the fabric: one task on every node through a STRICT_SPREAD placement group.
SPREAD_SCRIPT = """
import json, ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init()
alive = [n for n in ray.nodes() if n["Alive"]]
pg = placement_group([{"CPU": 1}] * len(alive), strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=60)

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

refs = [where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i))
        .remote() for i in range(len(alive))]
ran_on = ray.get(refs, timeout=60)
print("RESULT " + json.dumps({"nodes": sorted(n["NodeID"] for n in alive), "ran_on": ran_on}), flush=True)
"""

# A driver that keeps the cluster busy until it is stopped.
LONG_SCRIPT = """
import time, ray
ray.init()
print("long job up on", len([n for n in ray.nodes() if n["Alive"]]), "nodes", flush=True)
time.sleep(600)
"""


def job_processes(allocation_ids: set[str]) -> list[str]:
    """Live processes of these allocations, found by the CETI_ALLOCATION_ID every job process (Ray's daemons
    included) inherits: Ray renames some of its processes, so command lines are not enough."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("CETI_ALLOCATION_ID") in allocation_ids:
                out.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:160]}")
        except psutil.Error:
            continue
    return out


def allocation_ids(client, job_id: str) -> set[str]:
    return {a["id"] for a in client.job(job_id)["allocations"]}


@pytest.fixture
def lab(tmp_path: Path):
    server = make_server(tmp_path, None, CETI_VERIFY_ENABLED="0")
    server.start()
    fabric = Fabric(server, tmp_path)
    for i, ports in enumerate(("47000-47127", "48000-48127")):  # one address: the two nodes' ranges must differ
        fabric.add_agent(f"ray{i}", extra_args=("--network-label", "lab", "--network-address", "127.0.0.1",
                                                 "--gang-ports", ports))
    yield fabric
    fabric.close()


def job_spec(script: str, **extra) -> dict:
    return {"name": "ray-gang", "nodes": 2, "engine": "ray", "resources": {"cpus": 1, "memory": "1Gi"},
            "command": [sys.executable, "-c", script], "retry": {"limit": 0}, **extra}


def logs_of(client, job_id: str) -> str:
    return "".join(c["data"] for c in client.logs(job_id)["chunks"])


def test_a_ray_job_runs_a_task_on_every_node_of_its_gang(lab: Fabric):
    client = lab.server.client(lab.project_token("ml"))
    job = client.submit(job_spec(SPREAD_SCRIPT))
    done = wait_until(lambda: (j := client.job(job["id"]))["state"] in ("succeeded", "failed", "unschedulable")
                      and j, 180, interval_s=0.5, what="the Ray job to end")
    text = logs_of(client, job["id"])
    assert done["state"] == "succeeded", (done["reason"], text[-3000:])
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    assert len(result["nodes"]) == 2
    assert sorted(result["ran_on"]) == result["nodes"]  # one task on each node
    allocs = done["allocations"]
    assert sorted(a["task_index"] for a in allocs) == [0, 1]
    assert len({a["node_id"] for a in allocs}) == 2
    wait_until(lambda: all(a["state"] in ("exited", "stopped") for a in client.job(job["id"])["allocations"]),
               60, what="every node of the gang to end")
    ids = allocation_ids(client, job["id"])
    wait_until(lambda: not job_processes(ids), 30, what="no process of the gang left")
    print(f"RAY_E2E spread job: submit to end {done['finished_at'] - done['created_at']:.1f}s")


def test_cancelling_a_ray_job_leaves_no_ray_process_on_any_node(lab: Fabric):
    client = lab.server.client(lab.project_token("ml"))
    job = client.submit(job_spec(LONG_SCRIPT))
    wait_until(lambda: "long job up on 2 nodes" in logs_of(client, job["id"]), 180, interval_s=0.5,
               what="the long Ray job to start on both nodes")
    ids = allocation_ids(client, job["id"])
    assert len(ids) == 2 and job_processes(ids), "Ray should be running now"
    started = time.monotonic()
    client.cancel(job["id"])
    wait_until(lambda: client.job(job["id"])["state"] == "cancelled", 60, what="the cancel")
    wait_until(lambda: not job_processes(ids), 40, what="no process of the gang left after the cancel")
    print(f"RAY_E2E cancel: cancelled and clean in {time.monotonic() - started:.1f}s")


def test_pre_empting_one_node_of_a_ray_job_stops_the_whole_gang(lab: Fabric):
    client = lab.server.client(lab.project_token("ml"))
    gang_job = client.submit(job_spec(LONG_SCRIPT, priority=10, interruptible=True))
    wait_until(lambda: "long job up on 2 nodes" in logs_of(client, gang_job["id"]), 180, interval_s=0.5,
               what="the interruptible Ray job to start on both nodes")
    ids = allocation_ids(client, gang_job["id"])
    # a developer job that needs all of node ray1: only pre-empting the gang's task there makes room
    node = lab.node_id_of("ray1")
    cpus = next(n for n in lab.server.admin().nodes() if n["id"] == node)["info"]["cpus"]
    urgent = client.submit({"name": "urgent", "command": ["sh", "-c", "echo urgent ran"], "priority": 90,
                            "resources": {"cpus": cpus, "memory": "256Mi"}, "placement": {"nodes": [node]}})
    started = time.monotonic()
    done = wait_until(lambda: (j := client.job(urgent["id"]))["state"] in ("succeeded", "failed") and j, 90,
                      interval_s=0.3, what="the urgent job to run")
    assert done["state"] == "succeeded"
    gang_state = wait_until(lambda: (j := client.job(gang_job["id"]))["state"] == "failed" and j, 60,
                            what="the pre-empted gang to end (retry limit 0)")
    assert "preempted" in gang_state["reason"]
    reasons = sorted(a["stop_reason"] for a in gang_state["allocations"])
    assert any(r.startswith("preempted") for r in reasons) and any(r.startswith("gang ended") for r in reasons)
    wait_until(lambda: not job_processes(ids), 40, what="no process of the pre-empted gang left")
    print(f"RAY_E2E pre-emption: urgent job done and the gang gone {time.monotonic() - started:.1f}s after submit")
