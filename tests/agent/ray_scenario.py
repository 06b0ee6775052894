"""One real Ray cluster of three nodes, run through the process executor and the Ray launcher, inside the
network namespace `test_ray_launcher.py` makes (loopback only). Prints one line, `SCENARIO {json}`, that the
tests assert on; it checks nothing itself. Not collected by pytest (no test_ prefix).

    python tests/agent/ray_scenario.py <executor root> <scratch base (short)>

The first worker starts before the head and waits for it; the head and the second worker start together, with
token auth on. The head's command runs one task on each node through a STRICT_SPREAD placement group, prints
what it saw, then waits for SIGTERM and exits 7 on it. Then, the way the agent stops allocations
(executor.request_stop: SIGTERM to the runner, SIGKILL after the grace): the first worker is stopped while the
cluster runs, then the head; the second worker leaves by itself once the head is gone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil

from ceti.agent.executor import Finished, ProcessExecutor
from ceti.agent.launchers import GangInfo, LaunchOptions, launch_command

STARTED = time.time()
TMP_RAY_BEFORE = Path("/tmp/ray").exists()
TOKEN = "0123456789abcdef" * 4
OPTIONS = LaunchOptions(grace_s=3.0, num_cpus=1, object_store_mib=80, head_gone_s=2.0)
STOP_GRACE_S = 10.0

SPREAD = r"""
import json, os, signal, sys, time
import ray
from ray.util.placement_group import placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init()
terms = []  # after ray.init(): a Ray driver's own SIGTERM handler exits with code 15
signal.signal(signal.SIGTERM, lambda *_: terms.append(time.time()))
size = int(os.environ["CETI_GANG_SIZE"])
deadline = time.time() + 60
while len(alive := [n for n in ray.nodes() if n["Alive"]]) < size and time.time() < deadline:
    time.sleep(0.2)
pg = placement_group([{"CPU": 1}] * size, strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=60)

@ray.remote(num_cpus=1)
def where():
    return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid()}

def on(i):
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)

ran = ray.get([where.options(scheduling_strategy=on(i)).remote() for i in range(size)], timeout=60)
table = placement_group_table(pg)
print("RESULT " + json.dumps({
    "nodes": sorted(n["NodeID"] for n in alive),
    "node_ips": sorted(n["NodeManagerAddress"] for n in alive),
    "ran": ran,
    "pg": {"strategy": table["strategy"], "state": table["state"],
           "bundle_nodes": [table["bundles_to_node_id"][i] for i in range(size)]},
    "ray_address": os.environ.get("RAY_ADDRESS"),
    "gang": [os.environ.get("CETI_GANG_RANK"), os.environ.get("CETI_GANG_SIZE")],
}), flush=True)
deadline = time.time() + 60
while not terms and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # a second SIGTERM would land here
print(f"SIGTERMS {len(terms)}", flush=True)
sys.exit(7)
"""


def gang(rank: int, port_base: int, head_port: int, token: str | None) -> GangInfo:
    data = {"engine": "ray", "size": 3, "rank": rank, "head_address": "127.0.0.1", "head_port": head_port,
            "bind_address": "127.0.0.1", "port_base": port_base, "port_count": 32}  # fmt: skip
    if token:
        data["auth_token"] = token
    return GangInfo.from_dict(data)


def start(ex: ProcessExecutor, alloc: str, script: str, info: GangInfo, scratch: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    argv, job_env = launch_command([sys.executable, "job.py"], env, info, scratch, sys.executable, OPTIONS)
    ex.start(alloc, argv, job_env, {"job.py": script}, gpu_indices=[])


def log(ex: ProcessExecutor, alloc: str, stream: str) -> str:
    return ex.read_logs(alloc, stream, 0, 10_000_000).decode(errors="replace")  # type: ignore[arg-type]


def wait_for(what: str, predicate, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def finished(ex: ProcessExecutor, allocs: list[str], timeout_s: float) -> dict[str, Finished]:
    done: dict[str, Finished] = {}

    def all_done() -> bool:
        done.update({f.alloc_id: f for f in ex.poll() if f.alloc_id in allocs})
        return len(done) == len(allocs)

    wait_for(f"{allocs} to end", all_done, timeout_s)
    return done


def result_of(f: Finished) -> dict:
    return {"exit_code": f.exit_code, "signal": f.signal, "stopped": f.stopped, "lost": f.lost,
            "wall_s": f.wall_s}  # fmt: skip


def processes_of(alloc: str) -> list[str]:
    """Live processes that carry the allocation's environment (every process of a job inherits it)."""
    mark = f"CETI_ALLOCATION_ID={alloc}".encode()
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if mark in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                out.append(f"{p.pid}: {' '.join(p.cmdline())[:160]}")
        except (psutil.Error, OSError):
            continue
    return out


def listening() -> list[list]:
    """[address, port, process name] of every listening socket in this network namespace."""
    out = []
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN:
            try:
                name = psutil.Process(c.pid).name() if c.pid else "?"
            except psutil.Error:
                name = "?"
            out.append([c.laddr.ip, c.laddr.port, name])
    return sorted(out)


RAY_MARKS = ("ray::", "raylet", "gcs_server", "ray/_private", "ray/dashboard", "ray/autoscaler",
             "ray.util.client", "/bin/ray ", "launchers/ray.py")  # fmt: skip


def stray_processes(marks: list[str]) -> list[str]:
    """Live processes started after the scenario began whose command line names one of our directories, or
    (in our network namespace) a Ray binary."""
    ours = os.readlink("/proc/self/ns/net")
    out = []
    for p in psutil.process_iter(["cmdline", "create_time", "status"]):
        try:
            if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.info["create_time"] < STARTED - 1:
                continue
            line = " ".join(p.info["cmdline"] or [])
            in_ns = os.readlink(f"/proc/{p.pid}/ns/net") == ours
        except (psutil.Error, OSError):
            continue
        if any(m in line for m in marks) or (in_ns and any(m in line for m in RAY_MARKS)):
            out.append(f"{p.pid}: {line[:160]}")
    return out


def main() -> None:
    root, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    ex = ProcessExecutor(root, python=sys.executable)
    out: dict = {"netns_interfaces": sorted(psutil.net_if_addrs())}
    t0 = time.monotonic()
    nodes = ("head", "worker1", "worker2")
    temp_dirs = {n: scratch / n for n in nodes}

    start(ex, "worker1", "", gang(1, 47100, 47000, TOKEN), temp_dirs["worker1"])
    waiting = "waiting for the Ray head"
    wait_for("worker1 to wait for its head", lambda: waiting in log(ex, "worker1", "stderr"), 30)
    start(ex, "head", SPREAD, gang(0, 47000, 47000, TOKEN), temp_dirs["head"])
    start(ex, "worker2", "", gang(2, 47200, 47000, TOKEN), temp_dirs["worker2"])

    def result_line() -> str | None:
        return next((x for x in log(ex, "head", "stdout").splitlines() if x.startswith("RESULT ")), None)

    line = wait_for("the head's RESULT", result_line, 90)
    out["result"] = json.loads(line.split(" ", 1)[1])
    out["result_after_s"] = round(time.monotonic() - t0, 1)
    out["worker1_waited"] = waiting in log(ex, "worker1", "stderr")
    out["running_before_stop"] = {n: len(processes_of(n)) for n in nodes}
    out["listening"] = listening()

    def stop(alloc: str) -> dict:
        started = time.monotonic()
        ex.request_stop(alloc, STOP_GRACE_S)
        result = result_of(finished(ex, [alloc], STOP_GRACE_S + 15)[alloc])
        result["stop_s"] = round(time.monotonic() - started, 1)
        result["left"] = processes_of(alloc)
        return result

    out["worker1"] = stop("worker1")
    out["worker1"]["head_still_running"] = "head" in ex.running()
    out["head"] = stop("head")
    head_lines = log(ex, "head", "stdout").splitlines()
    out["head"]["sigterms"] = next((x for x in head_lines if x.startswith("SIGTERMS")), "")
    started = time.monotonic()
    out["worker2"] = result_of(finished(ex, ["worker2"], 40)["worker2"])
    out["worker2"]["after_head_s"] = round(time.monotonic() - started, 1)
    out["worker2"]["left"] = processes_of("worker2")
    out["worker2"]["saw_head_gone"] = "is gone" in log(ex, "worker2", "stderr")
    out["temp_dirs_left"] = [str(p) for p in temp_dirs.values() if p.exists()]
    out["stray"] = stray_processes([str(root), str(scratch)])
    out["tmp_ray_created"] = not TMP_RAY_BEFORE and Path("/tmp/ray").exists()
    out["total_s"] = round(time.monotonic() - t0, 1)
    out["logs"] = {n: {s: log(ex, n, s)[-4000:] for s in ("stdout", "stderr")} for n in nodes}
    print("SCENARIO " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
