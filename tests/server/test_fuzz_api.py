"""Schemathesis over every operation of a real server's /openapi.json, as admin, provider, project and anonymous.

One `ceti server` process on 127.0.0.1 serves the whole module. Every response must be free of 5xx, carry a
status code the schema documents, and have a body and content type that match it. Examples per operation:
`CETI_FUZZ_EXAMPLES` (default 10; `make fuzz` runs 500). Generation is derandomized with a fixed seed, so a run
repeats exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import requests
from hypothesis import strategies as st

from ceti.server.app import create_app
from ceti.spec import NodeInfo
from tests.conftest import Fabric, make_server, wait_until

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis comes with the dev extras: make install-dev")
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("CETI_FUZZ_EXAMPLES", "10"))
SEED = 20260101
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
KINDS = ["admin", "provider", "project", "anonymous"]
AKASH_SDL = """
version: "2.0"
services: {web: {image: "nginx:1.27", expose: [{port: 80, to: [{global: true}]}]}}
profiles:
  compute: {web: {resources: {cpu: {units: 1}, memory: {size: 128Mi}, storage: [{size: 256Mi}]}}}
  placement: {dc: {pricing: {web: {denom: uakt, amount: 100}}}}
deployment: {web: {dc: {profile: web, count: 1}}}
"""


class Known:
    """Real ids on the fuzzed server, so generated requests also reach the code behind the 404s."""

    def __init__(self, fabric: Fabric):
        server = fabric.server
        admin = server.admin()
        self.tokens = {
            "admin": server.admin_token,
            "provider": fabric.provider_token(),
            "project": fabric.project_token("fuzz"),
        }
        provider = server.client(self.tokens["provider"])
        self.node_id = provider.register_node(NodeInfo(hostname="fuzz-node", cpus=64, memory_mib=262144))["node_id"]
        # a job of the project's, placed on the node, so there is an allocation to upload logs for
        project = server.client(self.tokens["project"])
        self.job_id = project.submit({"name": "fuzz", "command": ["sleep", "1000"]})["id"]

        def placed() -> str | None:
            run = provider.heartbeat(self.node_id, [], [])["run"]
            return run[0]["allocation_id"] if run else None

        self.allocation_id = wait_until(placed, 30, what="the fuzz job to be placed")
        provider.heartbeat(self.node_id, [self.allocation_id], [])
        provider.upload_logs(self.allocation_id, [{"stream": "stdout", "offset": 0, "data": "hello\n"}])
        # the only token the fuzzer may revoke: the others must keep working for the whole module
        self.victim_token_id = admin.create_token("project", "victim", project="victim")["id"]
        # an Akash order the market has seen, so lease, loss and close calls reach the state machine
        self.order_id = admin.akash_offer(sdl=AKASH_SDL, deployment_id="fuzz/1")[0]["order_id"]

    def for_path_parameter(self, name: str) -> list[str]:
        return {
            "node_id": [self.node_id],
            "job_id": [self.job_id, self.job_id[:8]],
            "allocation_id": [self.allocation_id],
            "token_id": [self.victim_token_id],
            "order_id": [self.order_id],
        }.get(name, [])


@pytest.fixture(scope="module")
def fuzz_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fabric, Known]]:
    tmp = Path(tmp_path_factory.mktemp("fuzz"))
    # a node lost mid-run would only make the run depend on timing
    config = tmp / "networks.yaml"  # the Akash market on, so its calls are fuzzed past "not configured"
    config.write_text("akash:\n  usd_per_token: {uakt: 3.0}\n  pricing: {scale: {cpu_per_millicore: 0.00002}}\n")
    server = make_server(tmp, None, CETI_NODE_LOST_AFTER_S="3600", CETI_NETWORKS_CONFIG=str(config))
    server.start()
    assert urlsplit(server.url).hostname == "127.0.0.1"
    fabric = Fabric(server, tmp)
    try:
        yield fabric, Known(fabric)
    finally:
        fabric.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:  # keep-alive: one connection for the module, not one per case
        yield session


def _schema_as_served() -> dict:
    # the app's own document, built without starting it; test_the_fuzzed_schema_is_the_served_one checks that
    # the running server serves exactly this at /openapi.json (schemathesis collects one test per operation at
    # import time, before any server runs; its fixture-based lazy loader does not work with pytest 9.2)
    return create_app().openapi()


schema = schemathesis.openapi.from_dict(
    _schema_as_served(),
    config=schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        # the coverage phase adds boundary cases beyond max-examples (about as many again): for `make fuzz` only,
        # so the default run stays bounded by CETI_FUZZ_EXAMPLES
        "phases": {"coverage": {"enabled": EXAMPLES >= 100}},
    }),
)


def test_the_fuzzed_schema_is_the_served_one(fuzz_fabric):
    fabric, _ = fuzz_fabric
    served = httpx.get(f"{fabric.server.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == _schema_as_served()


@pytest.mark.parametrize("who", KINDS)
@schema.parametrize()
@schema.given(data=st.data())
def test_every_operation_as_every_caller(case, data, who, fuzz_fabric, http):
    fabric, known = fuzz_fabric
    assert urlsplit(fabric.server.url).hostname == "127.0.0.1"
    for name in list(case.path_parameters or {}):
        choices = known.for_path_parameter(name)
        if choices:
            case.path_parameters[name] = data.draw(st.sampled_from([case.path_parameters[name], *choices]))
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if who != "anonymous":
        headers["Authorization"] = f"Bearer {known.tokens[who]}"
    case.headers = headers
    case.call_and_validate(base_url=fabric.server.url, session=http, checks=CHECKS, timeout=30)


def test_the_fuzzed_server_is_still_healthy(fuzz_fabric):
    fabric, known = fuzz_fabric
    admin = fabric.server.admin()
    assert admin.health()["status"] == "ok"
    assert admin.whoami()["kind"] == "admin"
    assert fabric.server.client(known.tokens["project"]).job(known.job_id)["id"] == known.job_id
