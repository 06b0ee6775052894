"""The quiet heartbeat: an agent that holds the current desired state and changes nothing gets `unchanged`,
and anything that changes what should run, or needs the full answer, gets the full answer."""

from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from ceti.server.app import create_app
from ceti.server.settings import Settings, VerifySettings
from tests.dashboard.inprocess import Plane


@contextmanager
def plane(tmp: Path, verify: bool = False):
    settings = Settings(data_dir=tmp / "server", database_url=None, verify=VerifySettings(enabled=verify))
    app = create_app(settings, admin_token_file=tmp / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Plane(client, (tmp / "admin-token").read_text().strip())


def beat(p: Plane, token: str, node: str, running=(), finished=(), epoch=None):
    body = {"running": list(running), "finished": list(finished)}
    if epoch is not None:
        body["epoch"] = epoch
    return p.ok("POST", f"/v1/agent/nodes/{node}/heartbeat", token, json=body)


def test_unchanged_only_while_the_agent_holds_the_current_state_and_runs_exactly_it(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="p")
        node = p.node(prov, "h1", "eu")
        first = beat(p, prov, node)
        assert first["unchanged"] is False
        quiet = beat(p, prov, node, epoch=first["epoch"])
        assert quiet["unchanged"] is True and quiet["run"] == [] and quiet["epoch"] == first["epoch"]
        last_seen = p.ok("GET", f"/v1/nodes/{node}")["last_heartbeat_at"]
        assert last_seen >= p.ok("GET", f"/v1/nodes/{node}")["registered_at"]

        job = p.ok("POST", "/v1/jobs", p.token("project", project="x"), json={"name": "j", "command": ["true"]})
        p.round()  # places the job on the node: its epoch moves
        placed = beat(p, prov, node, epoch=first["epoch"])
        assert placed["unchanged"] is False and placed["epoch"] > first["epoch"]
        alloc = placed["run"][0]["allocation_id"]
        assert placed["run"][0]["job_id"] == job["id"]
        # first report of it running: the server records the start, so the full path answers
        started = beat(p, prov, node, running=[alloc], epoch=placed["epoch"])
        assert started["unchanged"] is False and [r["allocation_id"] for r in started["run"]] == [alloc]
        assert beat(p, prov, node, running=[alloc], epoch=started["epoch"])["unchanged"] is True
        # the same work, but the agent holds an older desired state: it gets the current one in full
        stale = beat(p, prov, node, running=[alloc], epoch=first["epoch"])
        assert stale["unchanged"] is False and stale["epoch"] == started["epoch"] and stale["run"]
        # an agent that runs something else, or nothing, is told in full what should run
        assert beat(p, prov, node, running=[], epoch=started["epoch"])["unchanged"] is False
        assert beat(p, prov, node, running=[alloc, "other"], epoch=started["epoch"])["unchanged"] is False
        assert beat(p, prov, node, running=["other"], epoch=started["epoch"])["unchanged"] is False
        # an exit report always takes the full path
        done = beat(p, prov, node, finished=[{"allocation_id": alloc, "exit_code": 0}], epoch=started["epoch"])
        assert done["unchanged"] is False and done["run"] == []
        assert p.ok("GET", f"/v1/jobs/{job['id']}")["state"] == "succeeded"


def test_quiet_heartbeats_keep_a_node_alive_and_respect_ownership(tmp_path):
    with plane(tmp_path) as p:
        prov, other = p.token("provider", provider="p"), p.token("provider", provider="q")
        node = p.node(prov, "h1", "eu")
        epoch = beat(p, prov, node)["epoch"]
        before = p.ok("GET", f"/v1/nodes/{node}")["last_heartbeat_at"]
        assert beat(p, prov, node, epoch=epoch)["unchanged"] is True
        assert p.ok("GET", f"/v1/nodes/{node}")["last_heartbeat_at"] >= before
        refused = p.call("POST", f"/v1/agent/nodes/{node}/heartbeat", other, json={"running": [], "epoch": epoch})
        assert refused.status_code == 403
        missing = p.call("POST", "/v1/agent/nodes/nope/heartbeat", prov, json={"running": [], "epoch": 0})
        assert missing.status_code == 404


def test_an_open_or_due_proof_of_hardware_always_gets_the_full_answer(tmp_path):
    with plane(tmp_path, verify=True) as p:
        prov = p.token("provider", provider="p")
        node = p.node(prov, "gpu", "eu", gpus=[("T4", 15360)])
        first = beat(p, prov, node)
        assert first["verify"] is not None  # challenged at first contact
        again = beat(p, prov, node, epoch=first["epoch"])
        assert again["unchanged"] is False and again["verify"] == first["verify"]


def test_a_new_node_is_told_its_epoch_so_its_first_heartbeat_can_be_quiet(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="p")
        info = {"hostname": "h1", "cpus": 8, "memory_mib": 32768, "region": "eu"}
        first = p.ok("POST", "/v1/agent/register", prov, json={"info": info})
        assert first["epoch"] is not None
        assert beat(p, prov, first["node_id"], epoch=first["epoch"])["unchanged"] is True
        # a restarted agent may run work the server knows of: it gets no epoch, and heartbeats in full first
        again = p.ok("POST", "/v1/agent/register", prov, json={"info": info, "node_id": first["node_id"]})
        assert again["node_id"] == first["node_id"] and again["epoch"] is None
