"""The spine end to end: real server and agent processes on loopback, driven through the CLI and the SDK.

Every test here runs against SQLite and against a throw-away PostgreSQL cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ceti_cmd, wait_until

pytestmark = pytest.mark.slow


def cli(fabric, *args: str, token: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    env["CETI_CONFIG"] = str(fabric.tmp / "no-config.json")
    cmd = ceti_cmd(*args, "--server", fabric.server.url, "--token", token or fabric.server.admin_token)
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def write_spec(tmp: Path, name: str, body: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(body)
    return path


def test_job_runs_and_its_logs_and_exit_code_come_back(fabric):
    fabric.add_agent("a1")
    spec = write_spec(fabric.tmp, "hello", """
name: hello
command: echo "hello from $GREETING" && echo oops >&2 && python3 -c 'import os; print("cvd=[" + os.environ["CUDA_VISIBLE_DEVICES"] + "]")'
env: {GREETING: fabric}
""")
    out = cli(fabric, "run", str(spec), "--follow")
    assert "hello from fabric" in out.stdout
    assert "cvd=[]" in out.stdout
    assert "oops" in out.stderr
    job_id = out.stdout.split("submitted job ")[1].split()[0]
    detail = json.loads(cli(fabric, "job", job_id, "--json").stdout)
    assert detail["state"] == "succeeded" and detail["exit_code"] == 0
    alloc = detail["allocations"][0]
    assert alloc["wall_s"] is not None and alloc["cpu_seconds"] is not None
    states = [e["to_state"] for e in detail["events"] if e["kind"] == "job_state"]
    assert states == ["pending", "starting", "running", "succeeded"]
    logs = cli(fabric, "logs", job_id)
    assert "hello from fabric" in logs.stdout


def test_failing_job_is_retried_to_its_limit(fabric):
    fabric.add_agent("a1")
    spec = write_spec(fabric.tmp, "fail", """
name: failing
command: echo attempt; exit 3
retry: {limit: 2, on: [failure]}
""")
    out = cli(fabric, "run", str(spec), "--follow", check=False)
    assert out.returncode == 3
    assert out.stdout.count("attempt") == 3
    job_id = out.stdout.split("submitted job ")[1].split()[0]
    job = fabric.server.admin().job(job_id)
    assert job["state"] == "failed" and job["retries"] == 2 and len(job["allocations"]) == 3
    assert "retry limit 2 reached" in job["reason"]


def test_cancel_stops_a_running_job_and_its_process_group(fabric):
    fabric.add_agent("a1")
    spec = write_spec(fabric.tmp, "sleep", """
name: sleeper
command: "trap '' TERM; sleep 300 & sleep 300; wait"
""")
    out = cli(fabric, "run", str(spec), "--json")
    job_id = json.loads(out.stdout)["id"]
    admin = fabric.server.admin()
    wait_until(lambda: admin.job(job_id)["state"] == "running", 20, what="job running")
    pids = wait_until(lambda: _job_pids(job_id, admin), 10, what="job processes")
    cli(fabric, "cancel", job_id)
    done = admin.wait(job_id, timeout_s=30)
    assert done["state"] == "cancelled"
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), 10, what="process group gone")


def _job_pids(job_id: str, admin) -> list[int]:
    job = admin.job(job_id)
    if not job["allocations"]:
        return []
    alloc_id = job["allocations"][-1]["id"]
    found = []
    for p in psutil.process_iter(["pid", "environ"]):
        try:
            if (p.info["environ"] or {}).get("CETI_ALLOCATION_ID") == alloc_id:
                found.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_killed_agent_makes_its_job_run_again_elsewhere(fabric):
    a1 = fabric.add_agent("a1")
    spec = write_spec(fabric.tmp, "long", """
name: long
command: echo started on $CETI_ALLOCATION_ID; sleep 6; echo done
retry: {limit: 2, on: [node_lost]}
""")
    job_id = json.loads(cli(fabric, "run", str(spec), "--json").stdout)["id"]
    admin = fabric.server.admin()
    wait_until(lambda: admin.job(job_id)["state"] == "running", 20, what="job running")
    first_node = admin.job(job_id)["allocations"][0]["node_id"]
    assert first_node == a1.node_id
    pids = _job_pids(job_id, admin)
    a1.kill()
    for p in pids:  # the machine died with its agent
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass
    fabric.add_agent("a2")
    done = admin.wait(job_id, timeout_s=60)
    assert done["state"] == "succeeded", done
    nodes = [a["node_id"] for a in done["allocations"]]
    assert nodes[0] == a1.node_id and nodes[-1] != a1.node_id
    assert done["allocations"][0]["state"] == "lost"


def test_restarting_the_server_loses_no_job_allocation_or_log(fabric):
    fabric.add_agent("a1")
    admin = fabric.server.admin()
    job = admin.submit({"name": "chatty", "command": "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done"})
    wait_until(lambda: admin.job(job["id"])["state"] == "running", 20, what="job running")
    before = admin.job(job["id"])
    fabric.server.kill()
    time.sleep(1.0)
    fabric.server.start()
    admin = fabric.server.admin()
    after = admin.job(job["id"])
    assert after["allocations"][0]["id"] == before["allocations"][0]["id"]
    done = admin.wait(job["id"], timeout_s=40)
    assert done["state"] == "succeeded"
    text = "".join(c["data"] for c in admin.logs(job["id"])["chunks"])
    assert [f"line {i}" for i in range(1, 9)] == [line for line in text.splitlines() if line.startswith("line")]


def test_cli_errors_are_one_line_and_non_zero(fabric):
    bad = write_spec(fabric.tmp, "bad", "name: x\ncommand: [echo]\nresources: {gpus: {count: two}}\nbogus: 1\n")
    out = cli(fabric, "run", str(bad), check=False)
    assert out.returncode == 2 and "resources.gpus.count" in out.stderr and "bogus" in out.stderr
    assert "Traceback" not in out.stderr
    broken = write_spec(fabric.tmp, "broken", "command: [echo\n")
    out = cli(fabric, "run", str(broken), check=False)
    assert out.returncode == 2 and "malformed YAML" in out.stderr
    out = cli(fabric, "jobs", token="wrong-token", check=False)
    assert out.returncode == 1 and "invalid or revoked token" in out.stderr and "Traceback" not in out.stderr
    out = cli(fabric, "run", str(fabric.tmp / "missing.yaml"), check=False)
    assert out.returncode == 2 and "cannot read" in out.stderr
    assert fabric.server.admin().jobs() == []


def test_agent_killed_and_restarted_on_its_data_dir_adopts_its_running_job(fabric):
    a1 = fabric.add_agent("a1")
    admin = fabric.server.admin()
    job = admin.submit({"name": "adopted", "command": "echo before; sleep 3; echo after; exit 5",
                        "retry": {"limit": 0}})
    wait_until(lambda: admin.job(job["id"])["state"] == "running", 20, what="job running")
    a1.kill()  # kill -9: the job's process group lives on
    a1.start()  # same data directory, same node id
    done = admin.wait(job["id"], timeout_s=40)
    assert done["state"] == "failed" and done["exit_code"] == 5
    assert len(done["allocations"]) == 1  # adopted, not run again
    text = "".join(c["data"] for c in admin.logs(job["id"])["chunks"])
    assert text.count("before") == 1 and text.count("after") == 1


def test_a_job_never_sees_the_agents_token(fabric):
    fabric.add_agent("a1")
    admin = fabric.server.admin()
    secret = fabric.provider_token()
    # the job prints everything it can see: its environment, its arguments, every file in its directory
    probe = (
        "import os, pathlib\n"
        "print('ENV', dict(os.environ))\n"
        "print('ARGS', open('/proc/self/cmdline').read())\n"
        "for p in pathlib.Path('.').rglob('*'):\n"
        "    if p.is_file(): print('FILE', p, p.read_text(errors='ignore'))\n"
    )
    job = admin.submit({"name": "probe", "command": ["python3", "probe.py"], "files": {"probe.py": probe}})
    done = admin.wait(job["id"], timeout_s=30)
    text = "".join(c["data"] for c in admin.logs(job["id"])["chunks"])
    assert done["state"] == "succeeded", text
    assert "ENV" in text and "FILE probe.py" in text
    assert secret not in text
    assert fabric.server.admin_token not in text


def test_output_with_nul_bytes_and_invalid_utf8_is_stored(fabric):
    fabric.add_agent("a1")
    admin = fabric.server.admin()
    job = admin.submit({"name": "binary", "command": "printf 'a\\000b\\377c\\n'; echo after"})
    done = admin.wait(job["id"], timeout_s=30)
    assert done["state"] == "succeeded"
    text = "".join(c["data"] for c in admin.logs(job["id"])["chunks"])
    assert text.startswith("a b") and "after" in text
