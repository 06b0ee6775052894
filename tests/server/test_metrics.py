"""`/metrics`: who may scrape it, and that its figures match the network (an in-process server, no sockets)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ceti.server import metrics
from ceti.server.services.events import record
from ceti.store import models as m
from tests.dashboard.inprocess import plane


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(p) -> dict[tuple[str, tuple], float]:
    r = p.call("GET", "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_only_an_admin_token_may_scrape(tmp_path):
    with plane(tmp_path) as p:
        assert p.call("GET", "/metrics", token="").status_code == 401
        assert p.call("GET", "/metrics", token="not-a-token").status_code == 401
        assert p.call("GET", "/metrics", token=p.token("project", project="a")).status_code == 403
        assert p.call("GET", "/metrics", token=p.token("provider", provider="b")).status_code == 403
        assert p.call("GET", "/metrics").status_code == 200


def test_a_fresh_install_exposes_every_series_at_zero(tmp_path):
    with plane(tmp_path) as p:
        got = scrape(p)
    assert got[("ceti_nodes", (("state", "online"),))] == 0
    assert got[("ceti_nodes", (("state", "lost"),))] == 0
    assert got[("ceti_jobs", (("priority", "50"), ("state", "pending")))] == 0
    assert got[("ceti_preemptions_total", ())] == 0
    assert got[("ceti_ledger_attempts_total", ())] == 0
    assert ("ceti_heartbeats_total", ()) in got
    assert ("ceti_scheduling_round_seconds_count", ()) in got


def test_figures_follow_the_network(tmp_path):
    with plane(tmp_path) as p:
        prov = p.token("provider", provider="acme")
        a = p.node(prov, "a", "eu-west-1", [("A100-80GB", 81920)] * 2)
        b = p.node(prov, "b", "us-east-1", [("T4", 15360)])
        p.ok("POST", "/v1/jobs", json={"name": "dev", "command": ["true"], "priority": 70,
                                       "resources": {"gpus": {"count": 1, "models": ["T4"]}}})
        p.ok("POST", "/v1/jobs", json={"name": "tao", "command": ["true"], "env": {"FABRIC_NETWORK": "bittensor"},
                                       "resources": {"gpus": {"count": 1, "models": ["A100-80GB"]}}})
        p.ok("POST", "/v1/jobs", json={"name": "huge", "command": ["true"], "priority": 10,
                                       "resources": {"gpus": {"count": 8}}})
        rounds_before = scrape(p)[("ceti_scheduling_round_seconds_count", ())]
        p.round()
        p.round()
        with p.http.app.state.sessions() as s:
            record(s, "preempted", 1.0, "test", node_id=a)
            s.get(m.Node, b).state = "lost"
            s.commit()
        beats_before = scrape(p)[("ceti_heartbeats_total", ())]
        metrics.record_heartbeat()
        metrics.record_heartbeat(2)
        got = scrape(p)
    assert got[("ceti_nodes", (("state", "online"),))] == 1
    assert got[("ceti_nodes", (("state", "lost"),))] == 1
    assert got[("ceti_gpus", (("model", "A100-80GB"), ("use", "bittensor")))] == 1
    assert got[("ceti_gpus", (("model", "A100-80GB"), ("use", "idle")))] == 1
    assert got[("ceti_gpus", (("model", "T4"), ("use", "lost")))] == 1
    assert got[("ceti_jobs", (("priority", "70"), ("state", "starting")))] == 1
    assert got[("ceti_jobs", (("priority", "50"), ("state", "starting")))] == 1
    assert got[("ceti_jobs", (("priority", "10"), ("state", "unschedulable")))] == 1
    assert got[("ceti_preemptions_total", ())] == 1
    assert got[("ceti_heartbeats_total", ())] == beats_before + 3
    assert got[("ceti_scheduling_round_seconds_count", ())] == rounds_before + 2
    assert got[("ceti_scheduling_rounds_total", ())] == 2


def test_each_scheduling_round_is_counted_once(tmp_path):
    with plane(tmp_path) as p:
        before = scrape(p)[("ceti_scheduling_round_seconds_count", ())]
        p.round()
        middle = scrape(p)[("ceti_scheduling_round_seconds_count", ())]
        after = scrape(p)[("ceti_scheduling_round_seconds_count", ())]
    assert middle == before + 1 and after == middle  # a scrape never adds rounds of its own


def test_metrics_is_in_the_openapi_schema(tmp_path):
    with plane(tmp_path) as p:
        schema = p.ok("GET", "/openapi.json")
    assert "/metrics" in schema["paths"]
