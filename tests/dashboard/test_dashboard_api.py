"""The dashboard's JSON endpoints and page routes, in process: scoping by token, empty state, GPU use, regions."""

from __future__ import annotations

from ceti.server.services import dashboard as views
from ceti.server.services.tokens import Principal
from ceti.store import models as m
from tests.dashboard.inprocess import plane

GPU_JOB = {"name": "dev", "command": ["true"], "resources": {"gpus": {"count": 1}}}


def test_a_fresh_install_answers_with_empty_views_not_errors(tmp_path):
    with plane(tmp_path) as p:
        o = p.ok("GET", "/v1/dashboard/overview")
        assert o["regions"] == [] and o["gpus_total"] == 0 and o["utilization"] == []
        assert o["jobs_by_state"] == {} and o["viewer"]["kind"] == "admin"
        assert p.ok("GET", "/v1/dashboard/jobs") == []
        assert p.ok("GET", "/v1/dashboard/nodes") == []
        s = p.ok("GET", "/v1/dashboard/scheduler")
        assert s["pending_by_reason"] == [] and s["preemptions_in_window"] == 0
        assert p.call("GET", "/v1/dashboard/overview", token="").status_code == 401


def test_a_project_token_sees_only_its_own_jobs(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        node = p.node(prov, "box", "eu-west-1", [("T4", 15360)] * 2)
        alice, bob = p.token("project", project="alice"), p.token("project", project="bob")
        job = p.ok("POST", "/v1/jobs", alice, json={**GPU_JOB, "name": "alice-secret"})
        p.round()
        p.heartbeat(prov, node, running=[p.ok("GET", f"/v1/jobs/{job['id']}")["allocations"][0]["id"]])
        assert [j["id"] for j in p.ok("GET", "/v1/dashboard/jobs", alice)] == [job["id"]]
        assert p.ok("GET", "/v1/dashboard/jobs", bob) == []
        for path in (f"/v1/dashboard/jobs/{job['id']}", f"/v1/dashboard/jobs/{job['id']}/logs",
                     f"/v1/dashboard/jobs/{job['id'][:8]}"):
            assert p.call("GET", path, bob).status_code == 404, path
        assert p.ok("GET", "/v1/dashboard/overview", bob)["jobs_by_state"] == {}
        assert p.ok("GET", "/v1/dashboard/overview", alice)["jobs_by_state"] == {"running": 1}
        # bob sees the GPU is busy with developer work, but not whose
        seen_by_bob = p.ok("GET", f"/v1/dashboard/nodes/{node}", bob)
        assert [g["use"] for g in seen_by_bob["gpu_detail"]] == ["developer", "idle"]
        assert all(g["job_id"] is None for g in seen_by_bob["gpu_detail"])
        assert seen_by_bob["current_work"][0]["job_id"] is None
        assert "alice-secret" not in str(seen_by_bob)
        assert p.ok("GET", f"/v1/dashboard/nodes/{node}", alice)["current_work"][0]["name"] == "alice-secret"
        assert p.ok("GET", "/v1/dashboard/scheduler", bob)["pending_by_reason"] == []


def test_a_provider_token_sees_its_nodes_and_no_jobs(tmp_path):
    with plane(tmp_path) as p:
        acme, other = p.token("provider", provider="acme"), p.token("provider", provider="other")
        mine = p.node(acme, "mine", "us-east-1")
        theirs = p.node(other, "theirs", "us-west-2")
        assert [n["id"] for n in p.ok("GET", "/v1/dashboard/nodes", acme)] == [mine]
        assert p.call("GET", f"/v1/dashboard/nodes/{theirs}", acme).status_code == 404
        assert p.call("GET", "/v1/dashboard/jobs", acme).status_code == 403
        o = p.ok("GET", "/v1/dashboard/overview", acme)
        assert o["jobs_by_state"] is None and [r["region"] for r in o["regions"]] == ["us-east-1"]
        assert p.ok("GET", "/v1/dashboard/scheduler", acme)["jobs_visible"] is False


def test_gpu_use_names_networks_and_utilization_follows_running_work(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        node = p.node(prov, "box", "eu-west-1a", [("A100-80GB", 81920)] * 4, price_per_gpu_hour=2.0)
        p.ok("POST", "/v1/jobs", json=GPU_JOB)
        p.ok("POST", "/v1/jobs", json={**GPU_JOB, "name": "tao", "env": {"FABRIC_NETWORK": "Bittensor"}})
        p.ok("POST", "/v1/jobs", json={**GPU_JOB, "name": "odd", "env": {"FABRIC_NETWORK": "somewhere-new"}})
        p.round()
        live = [a["id"] for j in p.ok("GET", "/v1/jobs") for a in p.ok("GET", f"/v1/jobs/{j['id']}")["allocations"]]
        p.heartbeat(prov, node, running=live)
        o = p.ok("GET", "/v1/dashboard/overview")
        assert o["gpu_use"] == {"developer": 1, "bittensor": 1, "other-network": 1, "idle": 1}
        assert o["gpus_by_model"] == [{"model": "A100-80GB", "total": 4,
                                       "uses": {"developer": 1, "bittensor": 1, "other-network": 1, "idle": 1}}]
        region = o["regions"][0]
        assert region["placed"] and region["label"].startswith("Europe West") and region["online"] == 1
        assert o["utilization"][-1]["developer"] == 1 and o["utilization"][-1]["network"] == 2
        assert o["utilization"][-1]["total"] == 4
        kinds = {j["name"]: j["kind"] for j in p.ok("GET", "/v1/dashboard/jobs")}
        assert kinds == {"dev": "developer", "tao": "bittensor", "odd": "other-network"}
        row = p.ok("GET", "/v1/dashboard/jobs")[0]
        assert row["gpu"] == "1x A100-80GB" and row["region"] == "eu-west-1a" and row["hostname"] == "box"
        page = p.ok("GET", f"/v1/dashboard/nodes/{node}")
        assert isinstance(page["reliability"], float) and 0 <= page["reliability"] <= 1
        assert page["earnings"] == 0.0  # nothing metered yet
        assert page["heartbeat_age_s"] < 60 and len(page["hardware"]["gpus"]) == 4


def test_the_job_page_shows_attempts_events_logs_and_an_estimated_cost(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        node = p.node(prov, "box", "local", [("T4", 15360)], price_per_gpu_hour=3.6)
        job = p.ok("POST", "/v1/jobs", json={**GPU_JOB, "files": {"big.txt": "x" * 1000}})
        p.round()
        alloc = p.ok("GET", f"/v1/jobs/{job['id']}")["allocations"][0]["id"]
        p.heartbeat(prov, node, running=[alloc])
        p.ok("POST", f"/v1/agent/allocations/{alloc}/logs", prov,
             json={"chunks": [{"stream": "stdout", "offset": 0, "data": "hello\n"}]})
        p.heartbeat(prov, node, finished=[{"allocation_id": alloc, "exit_code": 0, "wall_s": 10.0}])
        page = p.ok("GET", f"/v1/dashboard/jobs/{job['id']}")
        assert page["state"] == "succeeded" and page["finished"]
        assert [e["to_state"] for e in page["events"] if e["kind"] == "job_state"] == [
            "pending", "starting", "running", "succeeded"]
        assert page["spec"]["files"] == ["big.txt"]  # names, not bodies
        assert abs(page["cost_estimate"] - 0.01) < 1e-9  # 10 s of one GPU at $3.60/h
        logs = p.ok("GET", f"/v1/dashboard/jobs/{job['id']}/logs")
        assert [c["data"] for c in logs["chunks"]] == ["hello\n"] and logs["finished"]
        again = p.ok("GET", f"/v1/dashboard/jobs/{job['id']}/logs?after_id={logs['next_after_id']}")
        assert again["chunks"] == []
        assert p.ok("GET", "/v1/dashboard/overview")["regions"][0]["placed"] is False  # "local" has no place


def test_regions_are_placed_by_name_zone_or_number():
    assert views.place_region("eu-west-1")["label"] == "Europe West (Ireland)"
    assert views.place_region("US-EAST-1B")["placed"]
    assert views.place_region("ap-southeast-3")["label"] == "Asia Pacific (Singapore)"
    assert views.place_region("my-basement") == {"lat": None, "lon": None, "label": "my-basement", "placed": False}


def test_work_kind():
    assert views.work_kind(None) == "developer" and views.work_kind(" ") == "developer"
    assert views.work_kind("AKASH") == "akash" and views.work_kind("folding") == "other-network"


def test_lost_nodes_show_by_region(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        a = p.node(prov, "a", "eu-central-1")
        p.node(prov, "b", "eu-central-1")
        with p.http.app.state.sessions() as s:
            s.get(m.Node, a).state = "lost"
            s.commit()
        region = p.ok("GET", "/v1/dashboard/overview")["regions"][0]
        assert (region["online"], region["lost"], sorted(region["nodes"])) == (1, 1, ["a", "b"])
        admin = Principal("t", "admin")
        with p.http.app.state.sessions() as s:
            assert views.overview(s, admin, 0.0)["nodes_lost"] == 1


def test_pages_and_assets_are_served_from_installed_files(tmp_path):
    with plane(tmp_path) as p:
        root = p.call("GET", "/", token="", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        page = p.call("GET", "/ui/", token="")
        assert page.status_code == 200 and "Sign in" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/ui/assets/app.js", "/ui/assets/app.css", "/ui/vendor/plotly.min.js"):
            r = p.call("GET", asset, token="")
            assert r.status_code == 200 and len(r.content) > 1000, asset
        assert p.call("GET", "/ui/assets/regions.json", token="").status_code == 404
        assert p.call("GET", "/ui/assets/..%2Fapp.py", token="").status_code == 404
        schema = p.ok("GET", "/openapi.json")
    paths = schema["paths"]
    for path in ("/v1/dashboard/overview", "/v1/dashboard/jobs", "/v1/dashboard/jobs/{job_id}",
                 "/v1/dashboard/jobs/{job_id}/logs", "/v1/dashboard/nodes", "/v1/dashboard/nodes/{node_id}",
                 "/v1/dashboard/scheduler"):
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok, path
    assert not any(p.startswith("/ui") for p in paths) and "/" not in paths
