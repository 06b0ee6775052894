"""Secrets: encrypted at rest, in the job's environment only, masked in logs, events and API answers."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from ceti.client import CetiError
from tests.conftest import ceti_cmd

pytestmark = pytest.mark.slow
VALUE = "s3cr3t-Value-42"


def test_a_secret_reaches_the_job_and_nowhere_else(sqlite_fabric):
    fabric = sqlite_fabric
    fabric.add_agent("a1")
    token = fabric.project_token("vault")
    project = fabric.server.client(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    env["CETI_CONFIG"] = str(fabric.tmp / "none.json")
    out = subprocess.run(ceti_cmd("secret", "set", "DB_PASSWORD", "--server", fabric.server.url, "--token", token),
                         input=VALUE + "\n", check=False, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [s["name"] for s in project.secrets()] == ["DB_PASSWORD"]
    assert VALUE not in str(project.secrets())
    probe = "import os, hashlib; print('sha', hashlib.sha256(os.environ['DB_PASSWORD'].encode()).hexdigest())"
    job = project.submit({"name": "uses-secret", "secrets": ["DB_PASSWORD"],
                          "command": f'python3 -c "{probe}"; echo leak:$DB_PASSWORD'})
    done = project.wait(job["id"], timeout_s=30)
    assert done["state"] == "succeeded", done
    text = "".join(c["data"] for c in project.logs(job["id"])["chunks"])
    assert "sha " + hashlib.sha256(VALUE.encode()).hexdigest() in text and VALUE not in text and "leak:" + "*" * len(VALUE) in text
    assert VALUE not in str(project.job(job["id"])) and VALUE not in str(project.events(job["id"]))
    raw = (fabric.server.data_dir / "ceti.db").read_bytes()
    for wal in fabric.server.data_dir.glob("ceti.db-wal"):
        raw += wal.read_bytes()
    assert VALUE.encode() not in raw  # encrypted at rest
    # another project neither sees it nor can use it
    other = fabric.server.client(fabric.project_token("other"))
    assert other.secrets() == []
    with pytest.raises(CetiError) as refused:
        other.submit({"command": ["true"], "secrets": ["DB_PASSWORD"]})
    assert refused.value.status == 400 and "unknown secret" in refused.value.message
