"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright, against real `ceti server`
and `ceti agent` processes on loopback. Screenshots of every page go to test-output/screenshots/.

`scripts/install-browser-deps.sh` installs Chromium and Playwright; without them these tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Fabric, ceti_cmd, make_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "screenshots"
INVENTORIES = REPO / "src" / "ceti" / "agent" / "recorded_gpus"
UI_TIMEOUT_MS = 15_000


def _expect():
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=UI_TIMEOUT_MS)
    return playwright_expect


def expect(locator):
    return _expect()(locator)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (scripts/install-browser-deps.sh installs it)")
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/install-browser-deps.sh installs Debian's package)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def network(tmp_path_factory, browser):
    """A server and two agents with recorded GPU inventories in two regions."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = make_server(tmp, None)
    server.start()
    fabric = Fabric(server, tmp)
    try:
        fabric.add_agent("gpu-dublin", region="eu-west-1", inventory=INVENTORIES / "2xT4.json",
                         price_per_gpu_hour=0.35)
        fabric.add_agent("gpu-virginia", region="us-east-1", inventory=INVENTORIES / "4xA100-40GB.json",
                         price_per_gpu_hour=1.2)
        yield fabric
    finally:
        fabric.close()


def _open(browser, server, token: str):
    """A fresh browser context signed in with `token`, recording every request the page makes."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    seen: list[dict] = []

    def on_response(response):
        if "/v1/" in response.url:
            try:
                body = response.text()
            except Exception:  # noqa: BLE001 - a response the page abandoned has no body
                body = ""
            seen.append({"url": response.url, "status": response.status,
                         "auth": response.request.headers.get("authorization", ""), "body": body})

    page.on("response", on_response)
    page.goto(f"{server.url}/")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    return context, page, seen


def _shot(page, name: str) -> None:
    page.wait_for_timeout(300)  # let charts finish drawing
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _cli(fabric: Fabric, *args: str, token: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    env["CETI_CONFIG"] = str(fabric.tmp / "no-config.json")
    out = subprocess.run(ceti_cmd(*args, "--server", fabric.server.url, "--token", token), check=False,
                         capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    return out


def test_a_fresh_install_shows_a_helpful_empty_state(tmp_path, browser):
    server = make_server(tmp_path, None)
    server.start()
    try:
        context, page, seen = _open(browser, server, server.admin_token)
        empty = page.locator("[data-testid=empty-state]").first
        empty.wait_for()
        assert "No nodes yet" in page.inner_text("#view")
        assert "ceti agent" in page.inner_text("#view")
        assert page.inner_text("[data-testid=nodes-online] .value") == "0"
        _shot(page, "empty-overview")
        for route, expect in (("jobs", "No jobs yet"), ("nodes", "No nodes yet"), ("scheduler", "No job is waiting")):
            page.goto(f"{server.url}/ui/#/{route}")
            page.get_by_text(expect).first.wait_for()
            _shot(page, f"empty-{route}")
        assert all(r["status"] == 200 for r in seen), [(r["url"], r["status"]) for r in seen if r["status"] != 200]
        context.close()
    finally:
        server.stop()


def test_the_overview_shows_both_nodes_and_their_regions(network, browser):
    context, page, _ = _open(browser, network.server, network.server.admin_token)
    expect(page.locator("[data-testid=region-row]")).to_have_count(2)
    rows = page.locator("[data-testid=region-row]").all_inner_texts()
    assert any("eu-west-1" in r and "gpu-dublin" in r for r in rows), rows
    assert any("us-east-1" in r and "gpu-virginia" in r for r in rows), rows
    assert page.inner_text("[data-testid=nodes-online] .value") == "2"
    assert page.inner_text("[data-testid=gpus-total] .value") == "6"
    # the world view and the charts are drawn (plotly.js came from this server, not the internet)
    for chart in ("#world-map", "#gpu-use", "#gpus-by-model", "#utilization"):
        page.wait_for_selector(f"{chart} .main-svg")
    _shot(page, "overview")
    page.goto(f"{network.server.url}/ui/#/nodes")
    expect(page.locator("[data-testid=node-link]")).to_have_count(2)
    table = page.inner_text("#nodes-table")
    assert "% per hour" in table and "$0" in table  # reliability from the node's history; nothing earned yet
    _shot(page, "nodes")
    page.click("text=gpu-virginia")
    page.wait_for_selector("[data-testid=hardware]")
    assert "A100-40GB" in page.inner_text("#view")
    _shot(page, "node")
    page.goto(f"{network.server.url}/ui/#/scheduler")
    page.wait_for_selector("#round-latency .main-svg")
    _shot(page, "scheduler")
    context.close()


def test_a_cli_job_appears_runs_and_streams_its_logs_without_reload(network, browser):
    alice = network.project_token("alice")
    spec = network.tmp / "streamer.yaml"
    spec.write_text("name: alice-streamer\n"
                    "command: for i in 1 2 3 4 5 6; do echo stream-line-$i; sleep 0.4; done\n")
    context, page, _ = _open(browser, network.server, alice)
    page.goto(f"{network.server.url}/ui/#/jobs")
    page.get_by_text("No jobs yet").wait_for()
    page.evaluate("window.__loadedOnce = true")  # gone if the page ever reloads
    job_id = json.loads(_cli(network, "run", str(spec), "--json", token=alice).stdout)["id"]
    link = page.locator(f"a[href='#/jobs/{job_id}']")
    link.wait_for()  # appeared by polling, no reload
    link.click()
    logs = page.locator("[data-testid=logs]")
    expect(logs).to_contain_text("stream-line-1")
    first_seen = logs.inner_text()
    assert "stream-line-6" not in first_seen  # caught while running: the rest arrives live
    expect(logs).to_contain_text("stream-line-6")
    page.locator("h1 .state.succeeded").wait_for()
    text = logs.inner_text()
    assert [f"stream-line-{i}" for i in range(1, 7)] == re.findall(r"stream-line-\d", text)
    assert page.evaluate("window.__loadedOnce") is True
    events = page.inner_text("#view")
    assert "running" in events and "succeeded" in events
    _shot(page, "job")
    page.goto(f"{network.server.url}/ui/#/jobs")
    page.locator(f"a[href='#/jobs/{job_id}']").wait_for()
    _shot(page, "jobs")
    context.close()


def test_a_project_token_sees_only_its_projects_jobs(network, browser):
    admin = network.server.admin()
    carol = network.project_token("carol")
    dave = network.project_token("dave")
    secret_job = network.server.client(carol).submit({"name": "carol-private-run", "command": ["echo", "carol"]})
    admin.wait(secret_job["id"], timeout_s=30)
    own = network.server.client(dave).submit({"name": "dave-run", "command": ["echo", "dave"]})
    context, page, seen = _open(browser, network.server, dave)
    for route in ("overview", "jobs", "nodes", "scheduler"):
        page.goto(f"{network.server.url}/ui/#/{route}")
        page.wait_for_timeout(600)
    page.goto(f"{network.server.url}/ui/#/jobs")
    page.locator(f"a[href='#/jobs/{own['id']}']").wait_for()
    assert "carol-private-run" not in page.inner_text("#view")
    # even with the id in hand, the page gets "not found"
    page.goto(f"{network.server.url}/ui/#/jobs/{secret_job['id']}")
    page.locator("[data-testid=problem]").wait_for()
    assert "no job" in page.inner_text("[data-testid=problem]")
    _shot(page, "other-projects-job")
    calls = [r for r in seen if "/v1/" in r["url"]]
    assert calls and all(r["auth"] == f"Bearer {dave}" for r in calls)
    assert {r["url"].split("/v1/")[1].split("?")[0].split("/")[0] for r in calls} <= {"whoami", "dashboard"}
    for r in calls:
        assert "carol-private-run" not in r["body"], r["url"]
        if r["status"] == 200:
            assert secret_job["id"] not in r["body"], r["url"]
    refused = [r for r in calls if secret_job["id"] in r["url"]]
    assert refused and all(r["status"] == 404 for r in refused)
    context.close()


def test_the_page_loads_nothing_from_outside_this_server(network, browser):
    context = browser.new_context()
    page = context.new_page()
    hosts = set()
    page.on("request", lambda req: hosts.add(re.sub(r"^[a-z]+://([^/]+)/.*$", r"\1", req.url)))
    page.goto(f"{network.server.url}/ui/")
    page.wait_for_selector("#token")
    page.wait_for_load_state("load")
    assert page.evaluate("typeof Plotly") == "object"
    assert hosts == {f"127.0.0.1:{network.server.port}"}
    context.close()
