"""Run jobs as local processes that survive the agent: kill -9 the agent, start it again, and it finds them.

Everything the executor knows is on disk, one directory per allocation:

    <root>/allocations/<alloc_id>/
        work/         the job's working directory (and HOME)
        stdout.log    the job's output, written by the job itself (files, not pipes: no reader needed)
        stderr.log
        state.json    who runs it: runner pid, process group, the runner's start time, GPUs
        stop.json     present once a stop was asked for: when, and the deadline before SIGKILL
        exit.json     written atomically when the job has ended (by the runner, or by us when it was lost)

The process tree is `runner` (see `ceti.agent.runner`) in its own session and process group, with the
job's command as its child. The runner waits for the command and writes exit.json, so results are recorded
even while no agent runs. A new executor on the same root sees the running jobs (`adopt`, `running`) and
the ended ones (`poll`) because it reads the same directories.

A pid alone does not identify a process: after a reboot or a long outage the number may belong to
someone else. A process is ours only when its start time matches the one recorded in state.json (since
boot, in clock ticks, on Linux, which clock changes do not move; psutil's create_time elsewhere) on the
same boot. Nothing is ever signalled without that check.

Not thread-safe: one executor per root, used from one thread (the agent's reconcile loop).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

import ceti
from ceti.agent.runner import EXIT_FILE, WORK_DIR, group_members, job_processes, write_json_atomic
from ceti.spec.job import check_relative_path

logger = logging.getLogger("ceti.agent")

STATE_FILE = "state.json"
STOP_FILE = "stop.json"
LOG_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}
RUNNER_EXIT_GRACE_S = 3.0  # after the job's processes are SIGKILLed, time for the runner to record the exit
MAX_LOG_CHUNK = 16 * 1024 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ALLOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AllocationNotFound(LookupError):
    pass


class AllocationRunning(RuntimeError):
    pass


class UnsafePath(ValueError):
    """A job file path that would land outside the job's working directory."""


@dataclass(frozen=True)
class Finished:
    alloc_id: str
    exit_code: int | None  # None: lost, no exit was recorded
    signal: int | None  # the signal that ended the command, when one did (exit_code is then 128 + signal)
    cpu_seconds: float
    peak_memory_mib: float
    wall_s: float
    stopped: bool  # ended after stop() / request_stop()
    lost: bool = False
    reason: str = ""
    finished_at: float | None = None


class ProcessExecutor:
    def __init__(self, root: Path, python: str | None = None):
        self.root = Path(root)
        self.allocations = self.root / "allocations"
        self.allocations.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # runners we started: reap them
        self._states: dict[str, dict[str, Any]] = {}  # state.json never changes once written
        self._finished: dict[str, Finished] = {}

    # --- starting -----------------------------------------------------------------------------------------

    def start(
        self,
        alloc_id: str,
        command: list[str],
        env: dict[str, str],
        files: dict[str, str],
        gpu_indices: list[int],
    ) -> None:
        """Start the job; nothing happens when the allocation already exists (running or ended)."""
        _check_alloc_id(alloc_id)
        _check_command(command)
        _check_env(env)
        gpus = _check_gpu_indices(gpu_indices)
        for path in files:
            _checked_path(path)
        alloc_dir = self.allocations / alloc_id
        try:
            alloc_dir.mkdir()
        except FileExistsError:
            return
        launched = False
        try:
            work = alloc_dir / WORK_DIR
            work.mkdir()
            write_files(work, files)
            job_env = job_environment(alloc_id, env, gpus, work)
            self._launch(alloc_id, alloc_dir, command, job_env, gpus)
            launched = True
        finally:
            if not launched:
                shutil.rmtree(alloc_dir, ignore_errors=True)

    def _launch(
        self, alloc_id: str, alloc_dir: Path, command: list[str], job_env: dict[str, str], gpus: list[int]
    ) -> None:
        argv = [self.python, "-P", "-m", "ceti.agent.runner", str(alloc_dir.absolute()), "--", *command]
        with (
            open(alloc_dir / LOG_FILES["stdout"], "ab") as out,
            open(alloc_dir / LOG_FILES["stderr"], "ab") as err,
        ):
            proc = subprocess.Popen(
                argv,
                cwd=alloc_dir / WORK_DIR,
                env=_runner_environment(),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        assert proc.stdin is not None
        try:
            # The runner waits for the handshake, so the job does not start before state.json records it.
            started = _process_start(proc.pid)
            state = {
                "alloc_id": alloc_id,
                "pid": proc.pid,
                "pgid": proc.pid,  # start_new_session: the runner leads its own group
                "create_time": psutil.Process(proc.pid).create_time(),
                "start_since_boot": started,
                "boot_id": _boot_id(),
                "boot_time": psutil.boot_time(),
                "started_at": time.time(),
                "gpu_indices": gpus,
                "command": command,
            }
            write_json_atomic(alloc_dir / STATE_FILE, state)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self._children[alloc_id] = proc
        self._states[alloc_id] = state
        try:
            proc.stdin.write(json.dumps({"env": job_env}).encode())
            proc.stdin.close()
        except BrokenPipeError:  # the runner died at start-up; poll() reports it lost
            logger.warning("allocation %s: the runner exited before the handshake", alloc_id)
        logger.info("allocation %s: started runner pid %d: %s", alloc_id, proc.pid, command)

    # --- stopping -----------------------------------------------------------------------------------------

    def request_stop(self, alloc_id: str, grace_s: float = 10.0) -> None:
        """Send SIGTERM to the job's process group now; poll() sends SIGKILL once grace_s has passed."""
        alloc_dir = self._existing_dir(alloc_id)
        state = self._state(alloc_id)
        if state is None or not self._runner_alive(alloc_id, state):
            return  # already ended on its own: poll() reports it (and ends any leftovers)
        now = time.time()
        previous = _read_json(alloc_dir / STOP_FILE)
        deadline = now + max(0.0, grace_s)
        if previous is not None:  # asking again may shorten the grace, never lengthen it
            deadline = min(deadline, float(previous["deadline"]))
        write_json_atomic(
            alloc_dir / STOP_FILE,
            {"requested_at": previous["requested_at"] if previous else now, "deadline": deadline},
        )
        # The runner fans SIGTERM out to the group once; without a runner, we signal the group.
        if not self._signal_runner(state, signal.SIGTERM) and self._group_is_ours(state):
            _killpg(state["pgid"], signal.SIGTERM)

    def stop(self, alloc_id: str, grace_s: float = 10.0) -> Finished | None:
        """Stop and wait: SIGTERM, SIGKILL after grace_s; returns when no process of the group is left."""
        self.request_stop(alloc_id, grace_s)
        state = self._state(alloc_id)
        if state is None:
            return self._check(alloc_id)
        give_up = time.monotonic() + grace_s + RUNNER_EXIT_GRACE_S + 5.0
        while time.monotonic() < give_up:
            self._reap()
            finished = self._check(alloc_id)
            if finished is not None and not self._group_alive(state):
                return finished
            time.sleep(0.02)
        if self._group_is_ours(state):
            _killpg(state["pgid"], signal.SIGKILL)
        self._reap()
        return self._check(alloc_id)

    def _advance_stop(self, alloc_id: str, state: dict[str, Any]) -> None:
        stop = _read_json(self.allocations / alloc_id / STOP_FILE)
        if stop is None:
            return
        now = time.time()
        if now >= stop["deadline"]:
            # The job's processes first, so the runner survives to record the exit (and its CPU time).
            for pid in job_processes(state["pid"], state["pgid"]):
                _kill(pid, signal.SIGKILL)
        if now >= stop["deadline"] + RUNNER_EXIT_GRACE_S and self._group_is_ours(state):
            _killpg(state["pgid"], signal.SIGKILL)

    # --- watching -----------------------------------------------------------------------------------------

    def poll(self) -> list[Finished]:
        """Every allocation whose runner has ended, each call, until forget(): the agent reports them until
        the server has them. A stop past its grace period is escalated to SIGKILL here."""
        self._reap()
        out = []
        for alloc_id in self._alloc_ids():
            finished = self._check(alloc_id)
            if finished is not None:
                out.append(finished)
        return out

    def running(self) -> list[str]:
        self._reap()
        return [
            a for a in self._alloc_ids() if (s := self._state(a)) is not None and self._runner_alive(a, s)
        ]

    def adopt(self) -> list[str]:
        """At start-up: the allocations whose runner is still alive (and really ours). Dead ones are left for
        poll() to report. The executor reads its directories on every call, so this is mostly a report."""
        alive = self.running()
        ended = [a for a in self._alloc_ids() if a not in alive]
        if alive or ended:
            logger.info(
                "adopted %d running allocation(s) %s; %d ended ones to report", len(alive), alive, len(ended)
            )
        return alive

    def forget(self, alloc_id: str) -> None:
        """Remove an ended allocation's directory (after the agent has shipped its logs and exit)."""
        _check_alloc_id(alloc_id)
        alloc_dir = self.allocations / alloc_id
        if not alloc_dir.exists():
            return
        state = self._state(alloc_id)
        if state is not None and self._runner_alive(alloc_id, state):
            raise AllocationRunning(f"allocation {alloc_id} is still running; stop it first")
        if state is not None and self._group_is_ours(state):
            _killpg(state["pgid"], signal.SIGKILL)
        shutil.rmtree(alloc_dir, ignore_errors=True)
        self._states.pop(alloc_id, None)
        self._finished.pop(alloc_id, None)
        self._children.pop(alloc_id, None)

    def read_logs(
        self, alloc_id: str, stream: Literal["stdout", "stderr"], offset: int, max_bytes: int
    ) -> bytes:
        """Up to max_bytes of a log from byte `offset`: chunks are named by (alloc_id, stream, offset), so
        sending one twice is harmless."""
        if stream not in LOG_FILES:
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        if offset < 0 or max_bytes < 0:
            raise ValueError("offset and max_bytes must not be negative")
        alloc_dir = self._existing_dir(alloc_id)
        try:
            with open(alloc_dir / LOG_FILES[stream], "rb") as f:
                f.seek(offset)
                return f.read(min(max_bytes, MAX_LOG_CHUNK))
        except FileNotFoundError:
            return b""

    def usage(self, alloc_id: str) -> dict[str, float]:
        """cpu_seconds, memory_mib (resident, summed over the job's processes) and wall_s while it runs; the
        recorded totals once it has ended."""
        alloc_dir = self._existing_dir(alloc_id)
        state = self._state(alloc_id)
        if state is None:
            return {"cpu_seconds": 0.0, "memory_mib": 0.0, "wall_s": 0.0}
        if not self._runner_alive(alloc_id, state):
            done = _read_json(alloc_dir / EXIT_FILE) or {}
            return {
                "cpu_seconds": float(done.get("cpu_seconds") or 0.0),
                "memory_mib": 0.0,
                "wall_s": float(done.get("wall_s") or 0.0),
            }
        cpu = rss = 0.0
        # The job's processes, not the runner: the same processes exit.json's totals count.
        for pid in job_processes(state["pid"], state["pgid"]):
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system + t.children_user + t.children_system
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        return {
            "cpu_seconds": round(cpu, 3),
            "memory_mib": round(rss / (1024 * 1024), 1),
            "wall_s": round(time.time() - state["started_at"], 3),
        }

    def alloc_dir(self, alloc_id: str) -> Path:
        _check_alloc_id(alloc_id)
        return self.allocations / alloc_id

    # --- internals ----------------------------------------------------------------------------------------

    def _check(self, alloc_id: str) -> Finished | None:
        """The allocation's result if its runner has ended (recording a lost one), else None."""
        if alloc_id in self._finished:
            return self._finished[alloc_id]
        alloc_dir = self.allocations / alloc_id
        state = self._state(alloc_id)
        if state is not None and self._runner_alive(alloc_id, state):
            self._advance_stop(alloc_id, state)
            return None
        done = _read_json(alloc_dir / EXIT_FILE)
        stopped = (alloc_dir / STOP_FILE).exists()
        if state is not None and self._group_is_ours(state):
            _killpg(state["pgid"], signal.SIGKILL)  # the runner is gone: nothing of the job may stay
        if done is None:
            done = self._lost_record(state, stopped)
            write_json_atomic(alloc_dir / EXIT_FILE, done)
            log = logger.info if stopped else logger.warning
            log("allocation %s: %s", alloc_id, done["reason"])
        finished = Finished(
            alloc_id=alloc_id,
            exit_code=done.get("exit_code"),
            signal=done.get("signal"),
            cpu_seconds=float(done.get("cpu_seconds") or 0.0),
            peak_memory_mib=float(done.get("peak_memory_mib") or 0.0),
            wall_s=float(done.get("wall_s") or 0.0),
            stopped=stopped,
            lost=bool(done.get("lost")),
            reason=str(done.get("reason") or ""),
            finished_at=done.get("finished_at"),
        )
        self._finished[alloc_id] = finished
        return finished

    def _lost_record(self, state: dict[str, Any] | None, stopped: bool) -> dict[str, Any]:
        now = time.time()
        record: dict[str, Any] = {
            "exit_code": None,
            "signal": None,
            "cpu_seconds": 0.0,
            "peak_memory_mib": 0.0,
            "wall_s": round(now - state["started_at"], 3) if state else 0.0,
            "finished_at": now,
            "lost": True,
        }
        if state is None:
            record["reason"] = "the agent died while starting the job"
        elif not self._same_boot(state):
            record["reason"] = "the machine restarted while the job ran"
        elif psutil.pid_exists(state["pid"]) and not self._same_process(state):
            record["reason"] = f"the runner is gone (pid {state['pid']} now belongs to another process)"
        elif stopped:
            record.update(
                exit_code=128 + signal.SIGKILL,
                signal=int(signal.SIGKILL),
                lost=False,
                reason="killed after the stop grace period; its usage was not recorded",
            )
        else:
            record["reason"] = f"the runner (pid {state['pid']}) ended without recording an exit"
        return record

    def _runner_alive(self, alloc_id: str, state: dict[str, Any]) -> bool:
        child = self._children.get(alloc_id)
        if child is not None and child.poll() is not None:
            return False
        if not self._same_process(state):
            return False
        try:
            return psutil.Process(state["pid"]).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _same_boot(self, state: dict[str, Any]) -> bool:
        boot_id = _boot_id()
        if boot_id and state.get("boot_id"):
            return bool(boot_id == state["boot_id"])
        return abs(psutil.boot_time() - float(state.get("boot_time") or 0.0)) < 2.0

    def _same_process(self, state: dict[str, Any]) -> bool:
        """Is state's pid still the process we started (not a later process that got the same number)?"""
        if not self._same_boot(state):
            return False
        pid = state["pid"]
        started = _process_start(pid)
        if started is not None and state.get("start_since_boot") is not None:
            return abs(started - float(state["start_since_boot"])) < 0.005
        try:
            return abs(psutil.Process(pid).create_time() - float(state["create_time"])) < 1.0
        except psutil.Error:
            return False

    def _group_is_ours(self, state: dict[str, Any]) -> bool:
        """May we signal process group state['pgid']? While any member lives the number stays the group's, so
        the group is ours unless its leader's pid now belongs to another process (the number was freed and
        reused) or the machine rebooted."""
        if not self._same_boot(state):
            return False
        return not psutil.pid_exists(state["pgid"]) or self._same_process(state)

    def _group_alive(self, state: dict[str, Any]) -> bool:
        return self._group_is_ours(state) and bool(group_members(state["pgid"]))

    def _signal_runner(self, state: dict[str, Any], sig: int) -> bool:
        """Signal the runner if it is still ours; a pidfd pins the process between the check and the kill."""
        pid = state["pid"]
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): check, then kill
            if not self._same_process(state):
                return False
            return _kill(pid, sig)
        try:
            if not self._same_process(state):
                return False
            signal.pidfd_send_signal(pidfd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(pidfd)

    def recorded_command(self, alloc_id: str) -> list[str]:
        """The command an allocation was started with (also one an earlier agent started), or []."""
        state = self._state(alloc_id) if (self.allocations / alloc_id).is_dir() else None
        return list((state or {}).get("command") or [])

    def _state(self, alloc_id: str) -> dict[str, Any] | None:
        if alloc_id not in self._states:
            state = _read_json(self.allocations / alloc_id / STATE_FILE)
            if state is None:
                return None
            self._states[alloc_id] = state
        return self._states[alloc_id]

    def _reap(self) -> None:
        for alloc_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[alloc_id]

    def _alloc_ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.allocations))
        except FileNotFoundError:
            return []
        return [n for n in names if ALLOC_ID_RE.match(n) and (self.allocations / n).is_dir()]

    def _existing_dir(self, alloc_id: str) -> Path:
        _check_alloc_id(alloc_id)
        alloc_dir = self.allocations / alloc_id
        if not alloc_dir.is_dir():
            raise AllocationNotFound(alloc_id)
        return alloc_dir


# --- the job's directory and environment ------------------------------------------------------------------


def write_files(work: Path, files: dict[str, str]) -> None:
    """Write the job's files under `work`, refusing any path that would land outside it, through '..', an
    absolute path or a symbolic link already there."""
    root = work.resolve()
    for rel, content in files.items():
        pure = _checked_path(rel)
        target = work.joinpath(*pure.parts)
        if not _inside(target.resolve(), root):
            raise UnsafePath(f"{rel!r} leads outside the working directory")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(target.parent.resolve(), root):
                raise UnsafePath(f"{rel!r} leads outside the working directory")
            mode = 0o755 if content.startswith("#!") else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        except UnsafePath:
            raise
        except OSError as exc:
            raise UnsafePath(f"{rel!r} cannot be written: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)


def job_environment(alloc_id: str, env: dict[str, str], gpu_indices: list[int], work: Path) -> dict[str, str]:
    """The job's whole environment: a few basics, the job's own variables, then what the job may not change.
    Nothing else of the agent's environment (its token, its proxies) is passed on."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(work.absolute()),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        **env,
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_indices),
        # NVML numbers GPUs in PCI bus order; without this CUDA numbers them fastest first, and index 0
        # could be a GPU that belongs to another job.
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CETI_ALLOCATION_ID": alloc_id,
    }


def _runner_environment() -> dict[str, str]:
    """Just enough for the runner's Python to import ceti; the job's environment comes through the handshake."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PYTHONPATH": str(Path(ceti.__file__).resolve().parent.parent),
    }


def _checked_path(path: str) -> Any:
    try:
        return check_relative_path(path)
    except ValueError as exc:
        raise UnsafePath(str(exc)) from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_alloc_id(alloc_id: str) -> None:
    if not isinstance(alloc_id, str) or not ALLOC_ID_RE.match(alloc_id):
        raise ValueError(f"{alloc_id!r} is not a valid allocation id (letters, digits, '.', '_', '-')")


def _check_command(command: list[str]) -> None:
    if not command or not all(isinstance(a, str) and "\x00" not in a for a in command):
        raise ValueError("command must be a non-empty list of strings")


def _check_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"environment variable {key} must be a string without NUL")


def _check_gpu_indices(gpu_indices: list[int]) -> list[int]:
    gpus = list(gpu_indices)
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in gpus) or len(set(gpus)) != len(
        gpus
    ):
        raise ValueError(f"gpu_indices must be distinct non-negative integers, not {gpu_indices!r}")
    return gpus


# --- processes --------------------------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_start(pid: int) -> float | None:
    """Seconds from boot to the process's start (Linux; None elsewhere or when it is gone). Unlike a
    wall-clock create time it does not move when the clock is set."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) / _CLOCK_TICKS  # field 22, starttime; fields[0] is field 3


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written by write_json_atomic, or None when absent (or damaged: then logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
