"""Proof of hardware through the API (in-process app, no sockets): challenges in heartbeats, the two answers,
the verdict on the node, and what scheduling makes of it."""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from ceti.server.app import create_app
from ceti.server.routers import verification as router_mod
from ceti.server.services import verification as verification_service
from ceti.server.services.scheduling import node_of
from ceti.server.settings import Settings, VerifySettings
from ceti.spec import GPUInfo, NodeInfo
from ceti.store import models as m
from ceti.verify.compute import roots_answer, rows_answer, run_challenge
from ceti.verify.merkle import MerkleTree
from tests.dashboard.inprocess import Plane

CPUS = os.cpu_count() or 1
H100 = [GPUInfo(index=i, model="H100-80GB", name="NVIDIA H100 80GB HBM3", vram_mib=81559, uuid=f"GPU-test-{i}")
        for i in range(2)]


PROOF_LIMIT = 4 * 2**20


@contextmanager
def plane(tmp: Path, **verify):
    knobs = {"budget_mib": 16, "overhead_s": 0.1, "mean_interval_s": 86400.0, **verify}
    settings = Settings(data_dir=tmp / "server", database_url=None, verify=VerifySettings(**knobs),
                        max_proof_body_bytes=PROOF_LIMIT)
    app = create_app(settings, admin_token_file=tmp / "admin-token", run_scheduler=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Plane(client, (tmp / "admin-token").read_text().strip())


def register(p: Plane, token: str, hostname: str, gpus=(), price: float = 0.0, cpus: int = CPUS) -> str:
    info = NodeInfo(hostname=hostname, cpus=cpus, memory_mib=8192, gpus=list(gpus), price_per_gpu_hour=price)
    return p.ok("POST", "/v1/agent/register", token, json={"info": info.model_dump(mode="json")})["node_id"]


def challenge_of(p: Plane, token: str, node_id: str) -> dict:
    answer = p.heartbeat(token, node_id)
    assert answer["verify"] is not None, answer
    return answer["verify"]


def roots(p: Plane, token: str, cid: str, body: dict):
    return p.call("POST", f"/v1/agent/verifications/{cid}/roots", token, json=body)


def rows(p: Plane, token: str, cid: str, body: dict):
    return p.call("POST", f"/v1/agent/verifications/{cid}/rows", token, json=body)


def answer_honestly(p: Plane, token: str, node_id: str, tamper=None) -> dict:
    """Run the node's challenge here; `tamper(run, request) -> rows body` lies in the second answer."""
    challenge = challenge_of(p, token, node_id)
    run = run_challenge(challenge, "numpy")
    step = roots(p, token, challenge["challenge_id"], roots_answer(run))
    assert step.status_code == 200, step.text
    step = step.json()
    assert step["verdict"] is None and step["state"] == "roots"
    body = rows_answer(run, step["row_request"])
    if tamper is not None:
        body = tamper(run, step["row_request"], body)
    out = rows(p, token, challenge["challenge_id"], body)
    assert out.status_code == 200, out.text
    return out.json()


def node(p: Plane, node_id: str) -> dict:
    return p.ok("GET", f"/v1/nodes/{node_id}")


def test_an_honest_cpu_node_is_verified_and_its_history_is_kept(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "honest")
        out = answer_honestly(p, prov, nid)
        assert out["state"] == "done" and out["verdict"]["verdict"] == "verified", out
        assert out["verdict"]["model_estimate"] == "cpu"
        n = node(p, nid)
        assert n["verdict"] == "verified" and n["verdict_at"] and n["next_verify_at"] > time.time()
        assert p.heartbeat(prov, nid)["verify"] is None  # nothing due until the next random check
        history = p.ok("GET", f"/v1/nodes/{nid}/verifications")
        assert [h["verdict"] for h in history] == ["verified"]
        assert history[0]["roots_at"] >= history[0]["issued_at"] and history[0]["evidence"]["lanes"]
        assert p.ok("GET", f"/v1/nodes/{nid}/verifications", prov)[0]["id"] == history[0]["id"]
        assert p.ok("GET", "/v1/nodes", prov)[0]["verdict"] == "verified"


def test_the_challenge_is_resent_until_its_roots_arrive_and_its_clock_does_not_restart(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "n")
        first = challenge_of(p, prov, nid)
        again = challenge_of(p, prov, nid)
        assert again == first
        history = p.ok("GET", f"/v1/nodes/{nid}/verifications")
        assert len(history) == 1 and history[0]["state"] == "issued"


def test_a_wrong_product_is_caught_even_with_consistent_roots(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "cheat")
        challenge = challenge_of(p, prov, nid)
        run = run_challenge(challenge, "numpy")
        lane = run.lanes[0]
        lane.c_rows["fp32"] = lane.c_rows["fp32"] + np.float32(1.0)  # a wrong C, committed to honestly
        from ceti.verify.compute import row_leaves

        lane.trees["fp32"] = MerkleTree(row_leaves(lane.c_rows["fp32"], "fp32"))
        step = roots(p, prov, challenge["challenge_id"], roots_answer(run)).json()
        out = rows(p, prov, challenge["challenge_id"], rows_answer(run, step["row_request"])).json()
        assert out["verdict"]["verdict"] == "failed" and "values wrong" in out["verdict"]["reason"]
        assert node(p, nid)["verdict"] == "failed"


def test_a_wrong_root_is_caught(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "cheat")
        challenge = challenge_of(p, prov, nid)
        run = run_challenge(challenge, "numpy")
        body = roots_answer(run)
        body["lanes"][0]["roots"]["fp32"] = "0" * 64
        step = roots(p, prov, challenge["challenge_id"], body).json()
        out = rows(p, prov, challenge["challenge_id"], rows_answer(run, step["row_request"])).json()
        assert out["verdict"]["verdict"] == "failed" and "Merkle path" in out["verdict"]["reason"]


def _flip_row(run, request, body):
    proof = body["lanes"][0]["rows"]["fp32"][0]
    raw = bytearray(base64.b64decode(proof["data"]))
    raw[0] ^= 1
    proof["data"] = base64.b64encode(bytes(raw)).decode()
    return body


def _forge_paths(run, request, body):
    for proof in body["lanes"][0]["rows"]["fp32"]:
        proof["path"] = ["ab" * 32 for _ in proof["path"]]
    return body


def test_wrong_rows_and_forged_paths_are_caught(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        for name, tamper in (("flipped", _flip_row), ("forged", _forge_paths)):
            nid = register(p, prov, name)
            out = answer_honestly(p, prov, nid, tamper)
            assert out["verdict"]["verdict"] == "failed", (name, out)
            assert "Merkle path does not lead to the root" in out["verdict"]["reason"]
            assert node(p, nid)["verdict"] == "failed"


def test_replayed_unknown_and_out_of_order_answers_are_refused(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "n")
        challenge = challenge_of(p, prov, nid)
        cid = challenge["challenge_id"]
        run = run_challenge(challenge, "numpy")
        early = rows(p, prov, cid, {"challenge_id": cid, "lanes": []})
        assert early.status_code == 409 and "not waiting for rows" in early.json()["detail"]
        step = roots(p, prov, cid, roots_answer(run)).json()
        again = roots(p, prov, cid, roots_answer(run))
        assert again.status_code == 409
        out = rows(p, prov, cid, rows_answer(run, step["row_request"])).json()
        assert out["verdict"]["verdict"] == "verified"
        replay = rows(p, prov, cid, rows_answer(run, step["row_request"]))
        assert replay.status_code == 409 and "no longer open" in replay.json()["detail"]
        unknown = roots(p, prov, "f" * 32, roots_answer(run))
        assert unknown.status_code == 404 and "unknown challenge" in unknown.json()["detail"]
        # an answer naming another challenge than the one it is posted to
        nid2 = register(p, prov, "m")
        other = challenge_of(p, prov, nid2)
        wrong = roots(p, prov, other["challenge_id"], roots_answer(run)).json()
        assert wrong["verdict"]["verdict"] == "failed" and "another challenge" in wrong["verdict"]["reason"]
        assert node(p, nid)["verdict"] == "verified"  # the stray answers changed nothing there


class _Later:
    def __init__(self, offset_s: float):
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s


def test_late_answers_fail_and_unanswered_challenges_expire(tmp_path, monkeypatch):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "slow")
        challenge = challenge_of(p, prov, nid)
        run = run_challenge(challenge, "numpy")
        monkeypatch.setattr(router_mod, "time", _Later(challenge["deadline_s"] + 1))
        out = roots(p, prov, challenge["challenge_id"], roots_answer(run)).json()
        assert out["verdict"]["verdict"] == "failed" and out["verdict"]["reason"].startswith("timeout")
        monkeypatch.setattr(router_mod, "time", time)

        # rows long after the request
        nid2 = register(p, prov, "slow-rows")
        challenge = challenge_of(p, prov, nid2)
        run = run_challenge(challenge, "numpy")
        step = roots(p, prov, challenge["challenge_id"], roots_answer(run)).json()
        monkeypatch.setattr(router_mod, "time", _Later(120))
        out = rows(p, prov, challenge["challenge_id"], rows_answer(run, step["row_request"])).json()
        assert out["verdict"]["verdict"] == "failed" and "too late" in out["verdict"]["reason"]
        monkeypatch.setattr(router_mod, "time", time)

        # never answered: a later heartbeat closes it
        from ceti.server.routers import agent as agent_router

        nid3 = register(p, prov, "silent")
        challenge = challenge_of(p, prov, nid3)
        monkeypatch.setattr(agent_router, "time", _Later(challenge["deadline_s"] + 60))
        assert p.heartbeat(prov, nid3)["verify"] is None
        monkeypatch.setattr(agent_router, "time", time)
        n = node(p, nid3)
        assert n["verdict"] == "failed"
        history = p.ok("GET", f"/v1/nodes/{nid3}/verifications")
        assert history[0]["state"] == "done" and "timeout: no roots" in history[0]["reason"]
        late = roots(p, prov, challenge["challenge_id"], {"challenge_id": challenge["challenge_id"], "lanes": []})
        assert late.status_code == 409


def test_malformed_and_oversized_answers_get_a_verdict_or_a_4xx_never_verified(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "junk")
        cid = challenge_of(p, prov, nid)["challenge_id"]
        bad_json = p.http.post(f"/v1/agent/verifications/{cid}/roots", content=b"{not json",
                               headers={"Authorization": f"Bearer {prov}", "Content-Type": "application/json"})
        assert bad_json.status_code == 422
        not_object = p.call("POST", f"/v1/agent/verifications/{cid}/roots", prov, json=[1, 2, 3])
        assert not_object.status_code == 422
        # answers have their own body limit (rows of a VRAM-sized product are large), still a limit
        limit = PROOF_LIMIT
        huge = p.call("POST", f"/v1/agent/verifications/{cid}/roots", prov,
                      json={"challenge_id": cid, "error": "x" * (limit + 1)})
        assert huge.status_code == 413 and str(limit) in huge.json()["detail"]
        out = roots(p, prov, cid, {"challenge_id": cid, "lanes": "nonsense"}).json()
        assert out["verdict"]["verdict"] == "failed" and "malformed answer" in out["verdict"]["reason"]
        assert node(p, nid)["verdict"] == "failed"

        # rows over the session's own limit (far below the HTTP body limit)
        nid2 = register(p, prov, "padded")

        def pad(run, request, body):
            body["lanes"][0]["rows"]["fp32"][0]["data"] += "A" * (1500 * 1024)
            return body

        out = answer_honestly(p, prov, nid2, pad)
        assert out["verdict"]["verdict"] == "failed" and "too large" in out["verdict"]["reason"]


def test_a_provider_cannot_answer_or_read_for_another_providers_node(tmp_path):
    with plane(tmp_path) as p:
        mine, theirs = p.token("provider", provider="p1"), p.token("provider", provider="p2")
        nid = register(p, mine, "n")
        challenge = challenge_of(p, mine, nid)
        run = run_challenge(challenge, "numpy")
        assert roots(p, theirs, challenge["challenge_id"], roots_answer(run)).status_code == 403
        assert p.call("GET", f"/v1/nodes/{nid}/verifications", theirs).status_code == 403
        dev = p.token("project", project="dev")
        assert roots(p, dev, challenge["challenge_id"], roots_answer(run)).status_code == 403
        assert p.call("GET", f"/v1/nodes/{nid}/verifications", dev).status_code == 403
        step = roots(p, mine, challenge["challenge_id"], roots_answer(run))  # still open for its owner
        assert step.status_code == 200 and step.json()["state"] == "roots"


def test_a_cpu_claiming_h100s_is_a_mismatch_and_offered_at_the_price_of_what_it_is(tmp_path, monkeypatch):
    # At this tiny budget an H100's time window is nearly all transport allowance (its compute takes
    # microseconds): at 0.1 s a fast CPU answers inside it (0.07-0.09 s on one machine). The allowance here is
    # 0.01 s, still far above a loopback round trip, and the deadline (20 x the H100's expected time by
    # default, 0.22 s here) is widened to 4 s: on a machine busy with other tests the CPU took 0.5 s.
    policy_of = verification_service.policy_of
    monkeypatch.setattr(verification_service, "policy_of",
                        lambda vs: dataclasses.replace(policy_of(vs), deadline_factor=400.0))
    with plane(tmp_path, overhead_s=0.01) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "fake-h100", gpus=H100, price=9.0)
        out = answer_honestly(p, prov, nid)
        v = out["verdict"]
        assert v["verdict"] == "mismatch", v
        assert "slower than H100-80GB allows" in v["reason"]
        n = node(p, nid)
        assert n["verdict"] == "mismatch" and n["model_estimate"] == v["model_estimate"]
        priced = p.ok("POST", "/v1/jobs", json={"name": "paid", "command": ["true"], "max_price_per_hour": 50,
                                                 "resources": {"gpus": {"count": 1}}})
        p.round()
        job = p.ok("GET", f"/v1/jobs/{priced['id']}")
        assert job["state"] in ("pending", "unschedulable") and not job["allocations"], job
        assert "verified" in job["reason"], job["reason"]


def test_mismatch_price_cap():
    info = NodeInfo(hostname="h", cpus=4, memory_mib=4096, price_per_gpu_hour=9.0,
                    gpus=[GPUInfo(index=0, model="H100-80GB", vram_mib=81559)]).model_dump(mode="json")
    assert node_of("n", info, "online", "verified", "H100-80GB-SXM").price_per_gpu_hour == 9.0
    assert "verified" in node_of("n", info, "online", "verified", "H100-80GB-SXM").features
    assert node_of("n", info, "online", "mismatch", "T4").price_per_gpu_hour == 0.35
    assert node_of("n", info, "online", "mismatch", "cpu").price_per_gpu_hour == 0.0
    assert node_of("n", info, "online", "mismatch", "unknown").price_per_gpu_hour <= 0.35
    cheap = {**info, "price_per_gpu_hour": 0.1}
    assert node_of("n", cheap, "online", "mismatch", "A100-80GB").price_per_gpu_hour == 0.1  # never above the ask
    for verdict in (None, "failed", "mismatch"):
        assert "verified" not in node_of("n", info, "online", verdict, None).features


def test_priced_jobs_run_only_on_verified_nodes_and_opting_out_runs_anywhere(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        good = register(p, prov, "good")
        assert answer_honestly(p, prov, good)["verdict"]["verdict"] == "verified"
        plain = register(p, prov, "plain")
        challenge_of(p, prov, plain)  # challenged, never answered: not verified
        for i in range(3):
            p.ok("POST", "/v1/jobs", json={"name": f"paid{i}", "command": ["true"], "max_price_per_hour": 1.0,
                                           "resources": {"cpus": 1}})
        anywhere = p.ok("POST", "/v1/jobs", json={"name": "any", "command": ["true"], "max_price_per_hour": 1.0,
                                                   "placement": {"verified": False, "nodes": [plain]}})
        p.round()
        jobs = {j["name"]: p.ok("GET", f"/v1/jobs/{j['id']}") for j in p.ok("GET", "/v1/jobs")}
        for i in range(3):
            alloc = jobs[f"paid{i}"]["allocations"]
            assert not alloc or alloc[0]["node_id"] == good, jobs[f"paid{i}"]
        assert any(jobs[f"paid{i}"]["allocations"] for i in range(3))
        assert jobs["any"]["allocations"][0]["node_id"] == plain, anywhere


def test_a_server_without_proof_of_hardware_requires_none(tmp_path):
    with plane(tmp_path, enabled=False) as p:
        prov = p.token("provider", provider="acme")
        plain = register(p, prov, "plain")
        assert p.heartbeat(prov, plain).get("verify") is None  # nobody is challenged
        job = p.ok("POST", "/v1/jobs", json={"name": "paid", "command": ["true"], "max_price_per_hour": 1.0})
        p.round()
        assert p.ok("GET", f"/v1/jobs/{job['id']}")["allocations"][0]["node_id"] == plain


def test_unknown_models_fail_at_once_and_a_changed_claim_clears_the_verdict(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        odd = register(p, prov, "odd", gpus=[GPUInfo(index=0, model="Z9000", vram_mib=1000, uuid="GPU-z")])
        assert p.heartbeat(prov, odd)["verify"] is None
        n = node(p, odd)
        assert n["verdict"] == "failed"
        assert "not in the table" in p.ok("GET", f"/v1/nodes/{odd}/verifications")[0]["reason"]

        nid = register(p, prov, "grows")
        assert answer_honestly(p, prov, nid)["verdict"]["verdict"] == "verified"
        info = NodeInfo(hostname="grows", cpus=CPUS, memory_mib=16384)  # more memory claimed now
        p.ok("POST", "/v1/agent/register", prov, json={"info": info.model_dump(mode="json"), "node_id": nid})
        assert node(p, nid)["verdict"] is None
        assert p.heartbeat(prov, nid)["verify"] is not None  # challenged again for the new claim


def test_no_challenge_while_work_holds_the_gpus_it_needs(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        nid = register(p, prov, "busy", gpus=H100[:1])
        job = p.ok("POST", "/v1/jobs", json={"name": "free", "command": ["true"], "resources": {"gpus": {"count": 1}}})
        p.round()  # placed before the node's first heartbeat
        alloc = p.ok("GET", f"/v1/jobs/{job['id']}")["allocations"][0]["id"]
        assert p.heartbeat(prov, nid, running=[alloc])["verify"] is None
        assert p.heartbeat(prov, nid, running=[alloc])["verify"] is None
        done = p.heartbeat(prov, nid, finished=[{"allocation_id": alloc, "exit_code": 0}])
        assert done["verify"] is None or done["verify"]["node_id"] == nid
        assert p.heartbeat(prov, nid)["verify"]["node_id"] == nid


def test_a_uuid_on_two_nodes_is_never_verified(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        first = register(p, prov, "first", gpus=H100[:1])
        p.heartbeat(prov, first)
        twin = register(p, prov, "twin", gpus=H100[:1])
        out = answer_honestly(p, prov, twin)
        assert out["verdict"]["verdict"] == "failed" and "also reported by node" in out["verdict"]["reason"]


def test_verdict_columns_exist_in_the_store(tmp_path):
    assert {"verdict", "model_estimate", "verdict_at", "verdict_fingerprint", "pinned_gpu_uuids",
            "next_verify_at", "verify_challenge_id"} <= set(m.Node.__table__.columns.keys())
