"""The small parent that sits between the agent and a job, so the job outlives the agent.

    python -P -m ceti.agent.runner <allocation dir> -- <command...>

The executor starts the runner in a new session (its process group id is its pid) with stdout and stderr
already pointing at the allocation's log files, and writes a JSON handshake on the runner's stdin:
`{"env": {...}}`, the job's whole environment. The runner's own environment is only what Python needs, so
nothing the runner needs leaks into the job and nothing in the job's environment (PYTHONHOME, ...) can
break the runner. If stdin reaches end-of-file without a handshake the agent died while starting the job:
the runner records that and runs nothing.

The runner then starts the command as a child in the same process group, waits for it, and writes
`exit.json` atomically (temp file + os.replace), so a reader sees the whole result or none. Afterwards it
terminates whatever the job left behind: a job is over when its command is. On Linux the runner is a
"child subreaper", so a job's orphaned processes, even ones that left the process group with setsid(),
stay its descendants: it reaps them (their CPU time counts) and finds them to kill.

Stopping: SIGTERM to the runner makes it send SIGTERM once to the whole group (the executor signals the
runner, not the group, so each process of the job gets SIGTERM exactly once). The executor escalates to
SIGKILL after the grace period.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

EXIT_FILE = "exit.json"
WORK_DIR = "work"
LEFTOVER_GRACE_S = 2.0
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `data` so that readers see the old file or the whole new one, also after a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def group_members(pgid: int, exclude: int | None = None) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    members = []
    for pid in psutil.pids():
        if pid == exclude:
            continue
        try:
            if os.getpgid(pid) != pgid or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
        members.append(pid)
    return members


def job_processes(runner_pid: int, pgid: int) -> list[int]:
    """Every live process of a job but the runner: its process group and the runner's descendants."""
    pids = set(group_members(pgid, exclude=runner_pid))
    try:
        for p in psutil.Process(runner_pid).children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    pids.add(p.pid)
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return sorted(pids)


def become_subreaper() -> bool:
    """Linux prctl(PR_SET_CHILD_SUBREAPER): orphans below us are re-parented to us, not to init."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class _Runner:
    def __init__(self, alloc_dir: Path, command: list[str]):
        self.alloc_dir = alloc_dir
        self.command = command
        self.pgid = os.getpgrp()
        self.child_pid: int | None = None
        self.stop_requested = False
        self.forwarded = False
        self.started = time.monotonic()

    def on_sigterm(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        self.forward_stop()

    def forward_stop(self) -> None:
        if self.forwarded or self.child_pid is None:
            return
        self.forwarded = True
        # The whole group, the runner included: the handler is re-entered once and does nothing.
        os.killpg(self.pgid, signal.SIGTERM)

    def finish(self, **result: Any) -> None:
        result.setdefault("signal", None)
        result.setdefault("cpu_seconds", 0.0)
        result.setdefault("peak_memory_mib", 0.0)
        result.setdefault("lost", False)
        result.setdefault("reason", "")
        result["wall_s"] = round(time.monotonic() - self.started, 3)
        result["finished_at"] = time.time()
        result["stop_requested"] = self.stop_requested
        write_json_atomic(self.alloc_dir / EXIT_FILE, result)

    def message(self, text: str) -> None:
        """A line for the job's stderr.log, marked as the runner's."""
        try:
            os.write(2, f"ceti runner: {text}\n".encode(errors="replace"))
        except OSError:
            pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        become_subreaper()
        handshake = self.read_handshake()
        if handshake is None:
            self.finish(exit_code=None, lost=True, reason="the agent died before the job was started")
            return 1
        if self.stop_requested:
            self.finish(
                exit_code=128 + signal.SIGTERM, signal=int(signal.SIGTERM), reason="stopped before start"
            )
            return 0
        try:
            child = subprocess.Popen(
                self.command,
                cwd=self.alloc_dir / WORK_DIR,
                env=handshake["env"],
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except (FileNotFoundError, NotADirectoryError) as exc:
            self.message(f"cannot start {self.command[0]!r}: {exc}")
            self.finish(exit_code=EXIT_NOT_FOUND, reason="command not found")
            return 0
        except OSError as exc:
            self.message(f"cannot start {self.command[0]!r}: {exc}")
            self.finish(exit_code=EXIT_CANNOT_EXECUTE, reason=f"command cannot be executed: {exc.strerror}")
            return 0
        self.child_pid = child.pid
        if self.stop_requested:  # SIGTERM arrived while the child was being spawned
            self.forward_stop()
        while True:  # reap orphans re-parented to us as they end, until the command itself ends
            pid, status, _ = os.wait4(-1, 0)
            if pid == child.pid:
                break
        child.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        code = child.returncode
        sig = -code if code < 0 else None
        self.finish(
            exit_code=128 + sig if sig else code,
            signal=sig,
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
            # ru_maxrss is KiB on Linux; it is the largest single child, not a sum.
            peak_memory_mib=round(usage.ru_maxrss / 1024, 1),
        )
        self.end_leftovers()
        return 0

    def read_handshake(self) -> dict[str, Any] | None:
        try:
            data = sys.stdin.buffer.read()
            handshake = json.loads(data) if data else None
        except (OSError, ValueError):
            return None
        finally:
            # Nothing reads stdin again; point fd 0 at /dev/null rather than keep the agent's pipe open.
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        if not isinstance(handshake, dict) or not isinstance(handshake.get("env"), dict):
            return None
        return handshake

    def end_leftovers(self) -> None:
        """The command has exited: whatever it left behind gets SIGTERM, then SIGKILL after a short grace."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        me = os.getpid()
        self.reap()
        left = job_processes(me, self.pgid)
        if not left:
            return
        _send(left, signal.SIGTERM)
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
            if not job_processes(me, self.pgid):
                return
        for _ in range(20):  # a forking leftover may add processes while we kill
            self.reap()
            left = job_processes(me, self.pgid)
            if not left:
                return
            _send(left, signal.SIGKILL)
            time.sleep(0.05)

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def _send(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m ceti.agent.runner <allocation dir> -- <command...>", file=sys.stderr)
        return 2
    return _Runner(Path(args[0]), args[2:]).run()


if __name__ == "__main__":
    sys.exit(main())
