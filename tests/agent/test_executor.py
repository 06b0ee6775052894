"""The process executor with real processes: no mocks of the OS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ceti.agent.executor import (
    AllocationNotFound,
    AllocationRunning,
    Finished,
    ProcessExecutor,
    UnsafePath,
    write_files,
)
from ceti.agent.runner import group_members

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def finished(ex: ProcessExecutor, alloc_id: str, timeout_s: float = 15.0) -> Finished:
    return wait_for(lambda: next((f for f in ex.poll() if f.alloc_id == alloc_id), None), timeout_s, alloc_id)


def group_gone(pgid: int) -> bool:
    """True once no process, not even a zombie, is left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def state_of(ex: ProcessExecutor, alloc_id: str) -> dict:
    return json.loads((ex.alloc_dir(alloc_id) / "state.json").read_text())


@pytest.fixture
def ex(tmp_path: Path):
    executor = ProcessExecutor(tmp_path / "agent")
    yield executor
    for alloc_id in executor.running():  # never leave a test's processes behind
        executor.stop(alloc_id, grace_s=0)


def test_job_output_and_exit_code_come_back(ex: ProcessExecutor):
    ex.start("a1", py("import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)"), {}, {}, [])
    f = finished(ex, "a1")
    assert (f.exit_code, f.signal, f.stopped, f.lost) == (3, None, False, False)
    assert ex.read_logs("a1", "stdout", 0, 1000) == b"hello\n"
    assert ex.read_logs("a1", "stderr", 0, 1000) == b"oops\n"
    assert f.wall_s > 0 and f.cpu_seconds > 0 and f.peak_memory_mib > 1
    assert ex.running() == []
    assert ex.poll() == [f], "poll reports an ended allocation until it is forgotten"
    ex.forget("a1")
    assert ex.poll() == [] and not ex.alloc_dir("a1").exists()
    with pytest.raises(AllocationNotFound):
        ex.read_logs("a1", "stdout", 0, 10)


def test_logs_are_read_in_chunks_by_offset(ex: ProcessExecutor):
    ex.start("logs", py("print('x' * 999)"), {}, {}, [])
    finished(ex, "logs")
    chunks, offset = [], 0
    while chunk := ex.read_logs("logs", "stdout", offset, 256):
        chunks.append(chunk)
        offset += len(chunk)
    assert [len(c) for c in chunks] == [256, 256, 256, 232]
    assert b"".join(chunks) == b"x" * 999 + b"\n"
    assert ex.read_logs("logs", "stdout", 256, 10) == b"x" * 10, "the same offset gives the same bytes"
    with pytest.raises(ValueError):
        ex.read_logs("logs", "stdin", 0, 10)  # type: ignore[arg-type]


def test_files_are_written_and_job_runs_in_work_dir(ex: ProcessExecutor):
    files = {"data/in.txt": "42", "run.sh": "#!/bin/sh\necho from-script $(cat data/in.txt) $PWD\n"}
    ex.start("files", ["./run.sh"], {}, files, [])
    assert finished(ex, "files").exit_code == 0
    work = ex.alloc_dir("files") / "work"
    assert ex.read_logs("files", "stdout", 0, 1000).decode() == f"from-script 42 {work.resolve()}\n"


@pytest.mark.parametrize("gpus, expected", [([], ""), ([0], "0"), ([1, 3], "1,3"), ([7, 2, 5], "7,2,5")])
def test_cuda_visible_devices_is_exactly_the_given_gpus(ex: ProcessExecutor, gpus, expected):
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}  # a job cannot widen its own GPU fence
    ex.start("g", py("import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"), env, {}, gpus)
    assert finished(ex, "g").exit_code == 0
    assert ex.read_logs("g", "stdout", 0, 100).decode().strip() == repr(expected)


def test_job_environment_is_clean(ex: ProcessExecutor, monkeypatch):
    monkeypatch.setenv("CETI_TOKEN", "provider-secret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "agent-secret")
    monkeypatch.setenv("PYTHONPATH", "/agent/only")
    ex.start("env", py("import json, os; print(json.dumps(dict(os.environ)))"), {"MY_VAR": "x"}, {}, [2])
    assert finished(ex, "env").exit_code == 0
    seen = json.loads(ex.read_logs("env", "stdout", 0, 100_000))
    assert "CETI_TOKEN" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert "provider-secret-token" not in json.dumps(seen)
    assert set(seen) == {
        "PATH",
        "HOME",
        "LANG",
        "MY_VAR",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "CETI_ALLOCATION_ID",
    }
    assert seen["HOME"] == str((ex.alloc_dir("env") / "work").absolute())
    assert seen["CETI_ALLOCATION_ID"] == "env" and seen["MY_VAR"] == "x"


def test_start_is_idempotent(ex: ProcessExecutor):
    ex.start("once", py("print('first')"), {}, {}, [])
    ex.start("once", py("print('second')"), {}, {}, [])
    assert finished(ex, "once").exit_code == 0
    ex.start("once", py("print('third')"), {}, {}, [])
    assert ex.read_logs("once", "stdout", 0, 100) == b"first\n"


def test_command_not_found_is_127_with_a_message(ex: ProcessExecutor):
    ex.start("nf", ["/no/such/program", "arg"], {}, {}, [])
    f = finished(ex, "nf")
    assert f.exit_code == 127 and not f.lost
    assert b"/no/such/program" in ex.read_logs("nf", "stderr", 0, 1000)


def test_death_by_signal_is_128_plus_signal(ex: ProcessExecutor):
    ex.start("sig", py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), {}, {}, [])
    f = finished(ex, "sig")
    assert (f.exit_code, f.signal, f.stopped) == (137, 9, False)


GRANDCHILD_IGNORES_TERM = """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('grandchild.ready', 'w').write('1'); time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
"""


def test_stop_kills_the_whole_group_even_a_grandchild_that_ignores_sigterm(ex: ProcessExecutor):
    ex.start("stubborn", py(GRANDCHILD_IGNORES_TERM), {}, {}, [])
    work = ex.alloc_dir("stubborn") / "work"
    wait_for(lambda: (work / "grandchild.ready").exists(), what="grandchild")
    grandchild = int(ex.read_logs("stubborn", "stdout", 0, 100))
    pgid = state_of(ex, "stubborn")["pgid"]
    assert os.getpgid(grandchild) == pgid
    assert len(group_members(pgid)) == 3  # runner, job, grandchild

    t0 = time.monotonic()
    f = ex.stop("stubborn", grace_s=1.0)
    took = time.monotonic() - t0

    assert f is not None and f.stopped and not f.lost
    assert (f.exit_code, f.signal) == (143, 15), "the job itself ended on SIGTERM"
    assert 1.0 <= took < 6.0, "the grandchild ignored SIGTERM, so the grace period ran out before SIGKILL"
    assert group_members(pgid) == []
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    wait_for(lambda: group_gone(pgid), 5.0, "the group to be reaped")
    assert ex.running() == [] and ex.poll() == [f]


def test_stop_delivers_sigterm_once_and_a_graceful_job_exits_cleanly(ex: ProcessExecutor):
    code = """
        import signal, sys, time
        got = []
        def on_term(signum, frame):
            got.append(signum)
            time.sleep(0.3)  # a second SIGTERM, if any, arrives meanwhile
            print("terms", len(got), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        open("ready", "w").write("1")
        while True:
            time.sleep(0.05)
    """
    ex.start("graceful", py(code), {}, {}, [])
    wait_for(lambda: (ex.alloc_dir("graceful") / "work" / "ready").exists())
    t0 = time.monotonic()
    f = ex.stop("graceful", grace_s=10.0)
    assert time.monotonic() - t0 < 5.0, "a job that exits on SIGTERM does not wait for the grace period"
    assert f is not None and f.stopped and (f.exit_code, f.signal) == (0, None)
    assert ex.read_logs("graceful", "stdout", 0, 100) == b"terms 1\n"


def test_request_stop_is_non_blocking_and_poll_escalates(ex: ProcessExecutor):
    ex.start(
        "ignore",
        py(
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open('ready','w').write('1'); time.sleep(600)"
        ),
        {},
        {},
        [],
    )
    wait_for(lambda: (ex.alloc_dir("ignore") / "work" / "ready").exists())
    pgid = state_of(ex, "ignore")["pgid"]
    t0 = time.monotonic()
    ex.request_stop("ignore", grace_s=0.5)
    assert time.monotonic() - t0 < 0.5
    assert ex.running() == ["ignore"]
    f = finished(ex, "ignore", timeout_s=10.0)
    assert time.monotonic() - t0 >= 0.5
    assert f.stopped and (f.exit_code, f.signal) == (137, 9) and f.cpu_seconds >= 0
    wait_for(lambda: group_gone(pgid), 5.0, "the group to be reaped")


def test_leftover_background_processes_end_with_the_command(ex: ProcessExecutor):
    code = """
        import subprocess
        p = subprocess.Popen(["sleep", "600"])
        print(p.pid, flush=True)
    """
    ex.start("bg", py(code), {}, {}, [])
    f = finished(ex, "bg")
    assert f.exit_code == 0
    sleeper = int(ex.read_logs("bg", "stdout", 0, 100))
    pgid = state_of(ex, "bg")["pgid"]
    assert group_members(pgid) == []
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE


AGENT = """
import sys, time
from pathlib import Path
from ceti.agent.executor import ProcessExecutor
ex = ProcessExecutor(Path(sys.argv[1]))
job = [sys.executable, "-c",
       "import os, time\\nwhile not os.path.exists('go'): time.sleep(0.02)\\nprint('done', flush=True)\\nraise SystemExit(7)"]
ex.start("survivor", job, {}, {}, [])
print("started", flush=True)
time.sleep(600)
"""


def test_job_survives_kill_9_of_the_agent_and_is_adopted(tmp_path: Path):
    root = tmp_path / "agent"
    agent = subprocess.Popen([PY, "-c", AGENT, str(root)], stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None and agent.stdout.readline().strip() == "started"
    agent.kill()  # SIGKILL: the agent gets no chance to clean up
    agent.wait()

    ex = ProcessExecutor(root)
    assert ex.adopt() == ["survivor"]
    assert ex.running() == ["survivor"] and ex.poll() == []
    runner = psutil.Process(state_of(ex, "survivor")["pid"])
    assert runner.ppid() != agent.pid
    usage = wait_for(lambda: (u := ex.usage("survivor"))["memory_mib"] > 0 and u, what="the job's usage")
    assert usage["wall_s"] > 0

    (ex.alloc_dir("survivor") / "work" / "go").write_text("")
    f = finished(ex, "survivor")
    assert (f.exit_code, f.lost, f.stopped) == (7, False, False)
    assert ex.read_logs("survivor", "stdout", 0, 100) == b"done\n"


def test_thrown_away_executor_job_is_adopted_in_process(tmp_path: Path):
    old = ProcessExecutor(tmp_path / "agent")
    old.start("j", py("import os, time\nwhile not os.path.exists('go'): time.sleep(0.02)"), {}, {}, [])
    del old
    new = ProcessExecutor(tmp_path / "agent")
    assert new.adopt() == ["j"]
    (new.alloc_dir("j") / "work" / "go").write_text("")
    assert finished(new, "j").exit_code == 0


def test_a_job_that_died_without_exit_json_is_reported_lost(ex: ProcessExecutor, tmp_path: Path):
    ex.start("doomed", py("import time; time.sleep(600)"), {}, {}, [])
    state = state_of(ex, "doomed")
    wait_for(lambda: len(group_members(state["pgid"])) == 2, what="the job to start")
    os.killpg(state["pgid"], signal.SIGKILL)  # runner and job vanish: nobody writes exit.json
    wait_for(lambda: group_members(state["pgid"]) == [], what="the group to die")

    after_restart = ProcessExecutor(tmp_path / "agent")
    assert after_restart.adopt() == []
    f = finished(after_restart, "doomed")
    assert f.lost and f.exit_code is None and not f.stopped
    assert "without recording an exit" in f.reason
    assert after_restart.poll() == [f]
    recorded = json.loads((ex.alloc_dir("doomed") / "exit.json").read_text())
    assert recorded["lost"] is True, "the verdict is recorded, so the next agent reports the same"


def test_a_reused_pid_is_not_adopted_and_not_signalled(ex: ProcessExecutor, tmp_path: Path):
    ex.start("old", py("pass"), {}, {}, [])
    assert finished(ex, "old").exit_code == 0
    state = state_of(ex, "old")
    # Another process (here a session leader, like a shell) now has a pid that state.json names.
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        alloc = ex.alloc_dir("old")
        (alloc / "exit.json").unlink()
        state.update(pid=stranger.pid, pgid=stranger.pid)
        (alloc / "state.json").write_text(json.dumps(state))

        fresh = ProcessExecutor(tmp_path / "agent")
        assert fresh.adopt() == [] and fresh.running() == []
        fresh.request_stop("old", grace_s=0)
        f = finished(fresh, "old")
        assert f.lost and "another process" in f.reason
        fresh.forget("old")
        time.sleep(0.1)
        assert stranger.poll() is None, "a process that only shares the pid must not be signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_usage_is_positive_and_plausible(ex: ProcessExecutor):
    code = """
        import os, time
        ballast = b"x" * (64 * 1024 * 1024)  # resident: every page is written
        open("ready", "w").write("1")
        while not os.path.exists("stop"):
            pass  # burn CPU
    """
    ex.start("busy", py(code), {}, {}, [])
    work = ex.alloc_dir("busy") / "work"
    wait_for(lambda: (work / "ready").exists())
    time.sleep(1.0)
    u = ex.usage("busy")
    assert 0.5 <= u["cpu_seconds"] <= u["wall_s"] * (psutil.cpu_count() or 1) + 0.5
    assert 64 <= u["memory_mib"] < 1024
    assert 1.0 <= u["wall_s"] < 30
    (work / "stop").write_text("")
    f = finished(ex, "busy")
    assert f.exit_code == 0
    assert u["cpu_seconds"] <= f.cpu_seconds <= f.wall_s * (psutil.cpu_count() or 1) + 0.5
    assert 64 <= f.peak_memory_mib < 1024
    assert ex.usage("busy")["cpu_seconds"] == pytest.approx(f.cpu_seconds)


@pytest.mark.parametrize(
    "path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "a/..", "", "a\\b", "a\x00b"]
)
def test_paths_outside_the_work_dir_are_refused(ex: ProcessExecutor, path: str):
    with pytest.raises(UnsafePath):
        ex.start("bad", ["true"], {}, {"ok.txt": "fine", path: "x"}, [])
    assert not ex.alloc_dir("bad").exists(), "a refused start leaves nothing behind"


def test_symlink_escapes_are_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("original")
    work = tmp_path / "work"
    work.mkdir()
    (work / "dirlink").symlink_to(outside)
    (work / "filelink").symlink_to(outside / "target.txt")
    (work / "inner").mkdir()
    (work / "innerlink").symlink_to(work / "inner")

    with pytest.raises(UnsafePath):
        write_files(work, {"dirlink/pwned.txt": "x"})
    with pytest.raises(UnsafePath):
        write_files(work, {"dirlink/deeper/pwned.txt": "x"})
    with pytest.raises(UnsafePath):
        write_files(work, {"filelink": "x"})
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]
    assert (outside / "target.txt").read_text() == "original"

    write_files(work, {"innerlink/ok.txt": "fine"})  # a link that stays inside is allowed
    assert (work / "inner" / "ok.txt").read_text() == "fine"


def test_forget_refuses_a_running_allocation(ex: ProcessExecutor):
    ex.start("live", py("import time; time.sleep(600)"), {}, {}, [])
    with pytest.raises(AllocationRunning):
        ex.forget("live")
    ex.stop("live", grace_s=0)
    ex.forget("live")
    assert not ex.alloc_dir("live").exists()


def test_invalid_requests_are_refused(ex: ProcessExecutor):
    with pytest.raises(ValueError):
        ex.start("../up", ["true"], {}, {}, [])
    with pytest.raises(ValueError):
        ex.start("x", [], {}, {}, [])
    with pytest.raises(ValueError):
        ex.start("x", ["true"], {"BAD-NAME": "v"}, {}, [])
    with pytest.raises(ValueError):
        ex.start("x", ["true"], {}, {}, [0, 0])
    assert list(ex.allocations.iterdir()) == []


def test_runner_without_handshake_runs_nothing(tmp_path: Path):
    """The agent died between starting the runner and sending the job's environment."""
    alloc = tmp_path / "alloc"
    (alloc / "work").mkdir(parents=True)
    runner = subprocess.run(
        [PY, "-m", "ceti.agent.runner", str(alloc), "--", "touch", "ran"],
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    assert runner.returncode == 1
    result = json.loads((alloc / "exit.json").read_text())
    assert result["lost"] is True and result["exit_code"] is None
    assert not (alloc / "work" / "ran").exists()
