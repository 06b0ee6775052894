"""The container executor and engine detection with real Podman and a tiny local image: no mocks of the engine.

`scripts/install-container-deps.sh` installs Podman, runc and busybox-static and builds the image offline; without
them these tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ceti.agent.containers import (
    ContainerExecutor,
    ContainerRefused,
    EngineConfig,
    container_name,
    engine_candidates,
)
from ceti.agent.engines import detect, probe
from ceti.agent.executor import Finished
from ceti.agent.loop import Agent, AgentConfig
from ceti.spec import NodeInfo

PY = sys.executable
IMAGE = "localhost/ceti-busybox:test"
# What the engine and the image put into every container besides the job's variables.
ENGINE_ENV = {"HOSTNAME", "HOME", "PATH", "TERM", "container", "PWD", "SHLVL"}


@pytest.fixture(scope="module")
def engine() -> EngineConfig:
    podman = EngineConfig.for_engine("podman", {})
    result = probe(podman, timeout_s=60)
    if not result.ok:
        pytest.skip(
            f"podman cannot run {IMAGE} here ({result.detail}); run scripts/install-container-deps.sh as root"
        )
    return podman


def containers_of(engine: EngineConfig, cx: ContainerExecutor) -> list[str]:
    out = subprocess.run(
        engine.argv("ps", "-a", "--filter", f"label=ceti.owner={cx.owner}", "--format", "{{.Names}}"),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.split()


@pytest.fixture
def cx(engine: EngineConfig, tmp_path: Path) -> Iterator[ContainerExecutor]:
    ex = ContainerExecutor(tmp_path / "containers", engine, node_gpus=[])
    yield ex
    for alloc_id in ex.running():
        ex.stop(alloc_id, 0)
    left = containers_of(engine, ex)
    for name in left:
        subprocess.run(engine.remove_argv(name), capture_output=True, timeout=30, check=False)
    assert left == [], f"containers left behind: {left}"


def wait_for(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(cx: ContainerExecutor, alloc_id: str, timeout_s: float = 20.0) -> Finished:
    return wait_for(lambda: next((f for f in cx.poll() if f.alloc_id == alloc_id), None), timeout_s, alloc_id)


def sh(script: str) -> list[str]:
    return ["sh", "-c", textwrap.dedent(script)]


def test_a_container_job_runs_with_its_files_limits_logs_and_exit_code(cx: ContainerExecutor, engine):
    cx.start(
        "c1",
        IMAGE,
        sh("""
        echo "out $(cat data/in.txt)"; echo oops >&2; pwd
        cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null
        cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null
        echo result > out.txt; exit 3
    """),
        {},
        {"data/in.txt": "hello"},
        [],
        cpu_milli=500,
        memory_mib=64,
    )
    assert cx.running() == ["c1"]
    f = finished(cx, "c1")
    assert (f.exit_code, f.stopped, f.lost) == (3, False, False)
    out = cx.read_logs("c1", "stdout", 0, 10_000).decode().split()
    assert out[:3] == ["out", "hello", "/work"]
    assert str(64 * 1024 * 1024) in out  # memory limit, cgroup v1 or v2
    assert "50000" in out  # 0.5 CPU: a 50 ms quota per 100 ms period
    assert cx.read_logs("c1", "stderr", 0, 10_000) == b"oops\n"
    assert (cx.alloc_dir("c1") / "work" / "out.txt").read_text() == "result\n"
    assert containers_of(engine, cx) == []  # --rm, and removed once more when it ended
    cx.forget("c1")
    assert not cx.alloc_dir("c1").exists()


def test_the_environment_is_exactly_the_jobs(cx: ContainerExecutor, monkeypatch):
    monkeypatch.setenv("AGENT_SECRET", "do-not-leak")
    job_env = {"GREETING": "hello world", "TRICKY": "a=b 'c' \"d\" $HOME"}
    cx.start("env1", IMAGE, ["env"], job_env, {}, [])
    assert finished(cx, "env1").exit_code == 0
    lines = cx.read_logs("env1", "stdout", 0, 10_000).decode().splitlines()
    seen = dict(line.split("=", 1) for line in lines)
    assert {k: v for k, v in seen.items() if k not in ENGINE_ENV} == {**job_env, "CETI_ALLOCATION_ID": "env1"}
    assert seen["PATH"] == "/bin"  # the image's, not the agent's
    # the values are not on any command line (where `ps` shows them)
    state = json.loads((cx.alloc_dir("env1") / "state.json").read_text())
    assert not any("hello world" in arg for arg in state["command"])


def test_stop_gives_sigterm_then_kills_after_the_grace(cx: ContainerExecutor, engine):
    cx.start("s1", IMAGE, sh("""
        trap 'echo term >> marker' TERM
        echo ready > ready
        while true; do sleep 0.1; done
    """), {}, {}, [])  # fmt: skip
    work = cx.alloc_dir("s1") / "work"
    wait_for(lambda: (work / "ready").exists(), what="the container to start")
    started = time.monotonic()
    cx.request_stop("s1", grace_s=1.0)
    assert time.monotonic() - started < 1.0, "request_stop must not wait for the engine"
    f = finished(cx, "s1")
    took = time.monotonic() - started
    assert (work / "marker").read_text() == "term\n"  # SIGTERM first, exactly once
    assert (f.exit_code, f.stopped) == (128 + signal.SIGKILL, True)  # then SIGKILL: the trap did not exit
    assert 1.0 <= took < 6.0
    assert containers_of(engine, cx) == []


def test_a_graceful_container_ends_on_sigterm(cx: ContainerExecutor):
    cx.start(
        "g1",
        IMAGE,
        sh("trap 'echo bye; exit 0' TERM; touch ready; while true; do sleep 0.1; done"),
        {},
        {},
        [],
    )
    wait_for(lambda: (cx.alloc_dir("g1") / "work" / "ready").exists(), what="the container to start")
    started = time.monotonic()
    f = cx.stop("g1", grace_s=20.0)
    assert f is not None and (f.exit_code, f.stopped) == (0, True)
    assert time.monotonic() - started < 5.0
    assert cx.read_logs("g1", "stdout", 0, 100) == b"bye\n"


def test_gpus_the_node_lacks_are_refused_before_start(cx: ContainerExecutor, engine):
    with pytest.raises(ContainerRefused, match=r"GPU\(s\) \[0\], but this node has no GPUs"):
        cx.start("gpu1", IMAGE, ["true"], {}, {}, [0])
    assert not cx.alloc_dir("gpu1").exists() and cx.running() == [] and containers_of(engine, cx) == []
    with pytest.raises(ContainerRefused, match="not an image reference"):
        cx.start("bad1", "-v /:/host", ["true"], {}, {}, [])


def test_engine_errors_come_back_as_exit_codes_with_a_reason(cx: ContainerExecutor):
    cx.start("e1", "localhost/ceti-no-such-image:none", ["true"], {}, {}, [])
    f = finished(cx, "e1")
    assert f.exit_code == 125 and f.reason.startswith("the container engine failed")
    cx.start("e2", IMAGE, ["no-such-command"], {}, {}, [])
    f = finished(cx, "e2")
    assert f.exit_code == 127 and "not found" in f.reason


AGENT = """
import sys, time
from pathlib import Path
from ceti.agent.containers import ContainerExecutor, EngineConfig
cx = ContainerExecutor(Path(sys.argv[1]), EngineConfig.for_engine("podman", {}), [])
cx.start("k1", "localhost/ceti-busybox:test",
         ["sh", "-c", "touch ready; while [ ! -e go ]; do sleep 0.1; done; echo done; exit 7"], {}, {}, [])
print("started", flush=True)
time.sleep(600)
"""


def start_agent_and_kill_it(root: Path) -> None:
    agent = subprocess.Popen([PY, "-c", AGENT, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "started"
        wait_for(
            lambda: (root / "allocations" / "k1" / "work" / "ready").exists(), what="the container to start"
        )
    finally:
        agent.kill()  # SIGKILL: no chance to clean up
        agent.wait(10)


def test_after_kill_9_of_the_agent_a_restarted_one_adopts_the_container(engine, tmp_path: Path):
    root = tmp_path / "containers"
    start_agent_and_kill_it(root)
    cx = ContainerExecutor(root, engine, [])
    try:
        assert cx.adopt() == ["k1"] and cx.running() == ["k1"]
        assert containers_of(engine, cx) == ["ceti-k1"]
        assert cx.usage("k1")["memory_mib"] > 0  # the client, conmon and the container's processes
        (cx.alloc_dir("k1") / "work" / "go").write_text("")
        f = finished(cx, "k1")
        assert (f.exit_code, f.lost) == (7, False)
        assert cx.read_logs("k1", "stdout", 0, 100) == b"done\n"
    finally:
        if cx.running():
            cx.stop("k1", 0)
    assert containers_of(engine, cx) == []


def test_a_container_whose_client_died_with_the_agent_is_removed_at_restart(engine, tmp_path: Path):
    root = tmp_path / "containers"
    start_agent_and_kill_it(root)
    # As when the agent's whole process tree is killed: the runner and the engine's client die, the container
    # (under the engine's monitor, in a session of its own) lives on.
    state = json.loads((root / "allocations" / "k1" / "state.json").read_text())
    runner = psutil.Process(state["pid"])
    client = [p for p in runner.children() if p.name() in ("podman", "docker")]
    for p in [runner, *client]:
        p.kill()
    cx = ContainerExecutor(root, engine, [])
    try:
        assert containers_of(engine, cx) == ["ceti-k1"], "the test needs a container that outlived its client"
        assert cx.adopt() == []
        assert containers_of(engine, cx) == []
        f = finished(cx, "k1")
        assert f.lost or f.exit_code == 128 + signal.SIGKILL
    finally:
        for name in containers_of(engine, cx):
            subprocess.run(engine.remove_argv(name), capture_output=True, timeout=30, check=False)


def test_detection_reports_an_engine_only_when_a_container_ran(engine, tmp_path: Path):
    assert detect("off") == [] and engine_candidates(env={}) == []  # off by default: nothing runs
    assert [e.name for e in detect("podman")] == ["podman"]
    assert probe(engine).ok
    # a binary that answers 0 but ran nothing, an image that is not there, an engine that is not installed
    fake = tmp_path / "podman"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert not probe(EngineConfig.for_engine(str(fake), {})).ok
    missing_image = EngineConfig.for_engine("podman", {"CETI_CONTAINER_TEST_IMAGE": "localhost/ceti-none:x"})
    result = probe(missing_image)
    assert not result.ok and result.detail.startswith("exit 125")
    assert detect(str(tmp_path / "no-such-engine")) == []
    assert containers_of(engine, ContainerExecutor(tmp_path / "c", engine)) == []


def test_engine_options_come_from_the_environment():
    env = {
        "CETI_CONTAINER_ENGINE": "docker",
        "CETI_CONTAINER_GLOBAL_OPTS": "--host unix:///x.sock",
        "CETI_CONTAINER_RUN_OPTS": "--ulimit 'nofile=10:10'",
    }
    (docker,) = engine_candidates(env=env)
    assert docker.name == "docker" and docker.argv("ps") == ["docker", "--host", "unix:///x.sock", "ps"]
    assert docker.run_opts == ("--ulimit", "nofile=10:10")
    podman = EngineConfig.for_engine("/usr/bin/podman", {})
    assert podman.global_opts == ("--runtime", "runc", "--cgroup-manager=cgroupfs")
    assert podman.run_opts[0] == "--ulimit"
    assert container_name("a-1") == "ceti-a-1"
    assert os.environ.get("CETI_CONTAINER_ENGINE") in (None, "", "off")  # tests run with containers off


# --- the agent's loop: image items go to the container executor ---------------------------------------------


def loop_item(alloc_id: str, image: str | None, command: list[str], gpus: list[int] | None = None) -> dict:
    return {
        "allocation_id": alloc_id,
        "job_id": "j",
        "name": "n",
        "image": image,
        "command": command,
        "env": {},
        "files": {},
        "gpu_indices": gpus or [],
        "gpu_share_milli": 0,
        "cpu_milli": 500,
        "memory_mib": 64,
    }


def make_agent(tmp_path: Path, containers: str) -> Agent:
    info = NodeInfo(hostname="t", cpus=2, memory_mib=1024)
    return Agent(
        AgentConfig(
            servers=["http://127.0.0.1:9"], token="t", data_dir=tmp_path, info=info, containers=containers
        )
    )


def test_without_an_engine_an_image_item_is_refused_and_reported(tmp_path: Path):
    agent = make_agent(tmp_path, "off")
    assert agent.containers is None and agent.config.info.container_engines == []
    agent._reconcile({"epoch": 1, "run": [loop_item("i1", IMAGE, ["true"])], "stop": []})
    report = agent.state.unreported["i1"]
    assert report["exit_code"] == 127 and "no working container engine" in report["reason"]
    agent._ship_logs("i1")  # nothing ran, so there is nothing to ship, and no error


def test_the_loop_runs_image_items_as_containers_and_stops_them(engine, tmp_path: Path):
    agent = make_agent(tmp_path, "podman")
    assert agent.config.info.container_engines == ["podman"] and agent.containers is not None
    boxed = loop_item(
        "b1", IMAGE, ["sh", "-c", "trap 'exit 0' TERM; touch ready; while true; do sleep 0.1; done"]
    )
    plain = loop_item("p1", None, ["sleep", "30"])
    gpu = loop_item("g1", IMAGE, ["true"], gpus=[0])
    agent._reconcile({"epoch": 1, "run": [boxed, plain, gpu], "stop": []})
    try:
        assert agent.containers.running() == ["b1"] and agent.executor.running() == ["p1"]
        assert sorted(agent._running()) == ["b1", "p1"]
        assert "this node has no GPUs" in agent.state.unreported["g1"]["reason"]
        wait_for(lambda: (agent.containers.alloc_dir("b1") / "work" / "ready").exists(), what="the container")
        stop = [{"allocation_id": a, "grace_s": 5, "reason": "x"} for a in ("b1", "p1")]
        for _ in range(3):  # the server repeats the stop on every heartbeat: one engine stop is enough
            agent._reconcile({"epoch": 2, "run": [boxed, plain], "stop": stop})
        ended = wait_for(
            lambda: (
                {f.alloc_id: f for f in agent.containers.poll() + agent.executor.poll()}
                if not agent._running()
                else None
            ),
            what="both to stop",
        )
        assert (ended["b1"].exit_code, ended["b1"].stopped) == (0, True)
        assert ended["p1"].stopped
    finally:
        for ex in (agent.containers, agent.executor):
            for alloc_id in ex.running():
                ex.stop(alloc_id, 0)
    assert containers_of(engine, agent.containers) == []
