"""Structured logs (ceti.logs): JSON or readable lines, with the ids of the job, node and allocation attached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from ceti.logs import ids_in_path, resolve_format
from tests.conftest import ceti_cmd

PROGRAM = textwrap.dedent("""
    import asyncio, logging, sys
    import structlog
    from ceti.logs import RequestIds, bound_ids, configure_logging, set_process_ids

    configure_logging(sys.argv[1], "info")
    set_process_ids(node_id="node-1")
    logging.getLogger("ceti.agent").info("started allocation %s", "a-1", extra={"allocation_id": "a-1"})
    with bound_ids(job_id="job-7"):
        structlog.get_logger("ceti.server").warning("placed", gpus=2)
    logging.getLogger("ceti.server").debug("below the level: not shown")

    async def app(scope, receive, send):
        logging.getLogger("ceti.server").info("in a request")

    asyncio.run(RequestIds(app)({"type": "http", "path": "/v1/jobs/job-9/logs"}, None, None))
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("ceti.server").exception("round failed")
""")


def run(fmt: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROGRAM, fmt], capture_output=True, text=True, timeout=60,
                         check=True)
    return out.stderr


def test_json_lines_carry_ids_levels_and_loggers():
    records = [json.loads(line) for line in run("json").splitlines()]
    assert [r["event"] for r in records] == ["started allocation a-1", "placed", "in a request", "round failed"]
    first, placed, request, failed = records
    assert (first["allocation_id"], first["node_id"], first["logger"], first["level"]) == (
        "a-1", "node-1", "ceti.agent", "info")
    assert (placed["job_id"], placed["gpus"], placed["level"]) == ("job-7", 2, "warning")
    assert request["job_id"] == "job-9" and "job_id" not in first
    assert failed["exception"][0]["exc_type"] == "ZeroDivisionError"
    assert all("timestamp" in r for r in records)


def test_console_lines_are_readable():
    text = run("console")
    assert "started allocation a-1" in text and "job_id=job-7" in text and "ZeroDivisionError" in text
    assert not text.lstrip().startswith("{")


def test_ids_are_read_from_request_paths():
    assert ids_in_path("/v1/jobs/abc/cancel") == {"job_id": "abc"}
    assert ids_in_path("/v1/dashboard/jobs/abc") == {"job_id": "abc"}
    assert ids_in_path("/v1/agent/nodes/n1/heartbeat") == {"node_id": "n1"}
    assert ids_in_path("/v1/agent/allocations/a1/logs") == {"allocation_id": "a1"}
    assert ids_in_path("/healthz") == {}
    assert resolve_format("json") == "json"


def test_the_cli_refuses_an_unknown_format():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    out = subprocess.run(ceti_cmd("server", "--log-format", "xml", "--port", "1"), capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert out.returncode == 2 and "log format must be one of json, console" in out.stderr
