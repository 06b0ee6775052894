"""Run a command in a fresh network namespace that the test makes, where loopback is the only interface.

Ray advertises the machine's interface address even when told --node-ip-address 127.0.0.1; in a namespace of
its own it has nothing else to advertise, so all of a test's traffic stays on loopback and no port of the host
is taken. `unshare -n` needs root (or `unshare -rn`, a user namespace, where the kernel allows it).

Everything the command starts is killed when it ends or times out: each process whose network namespace is
the one made for it, found through /proc, whatever its session or parent.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Bring loopback up, then become the command: the namespace lives as long as its processes.
PRELUDE = 'ip link set lo up && exec "$@"'


@dataclass
class NetnsResult:
    returncode: int | None  # None: it timed out
    stdout: str
    stderr: str
    timed_out: bool
    leftovers: list[str] = field(default_factory=list)  # processes still in the namespace at the end (killed)


def _unshare_argv() -> list[str] | None:
    """The unshare invocation that works here, or None."""
    for argv in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        try:
            done = subprocess.run(
                [*argv, "--", "sh", "-c", PRELUDE, "sh", "true"], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return argv
    return None


@functools.cache
def netns_unshare() -> tuple[str, ...] | None:
    argv = _unshare_argv()
    return tuple(argv) if argv else None


def netns_skip_reason() -> str | None:
    """Why a test cannot make a network namespace here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if netns_unshare() is None:
        return "cannot make a network namespace here (`unshare -n` and `unshare -rn` are not permitted)"
    return None


def skip_unless_netns() -> None:
    """pytest.skip with the reason when no network namespace can be made."""
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)


def _netns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def processes_in_netns(netns: str, exclude: tuple[int, ...] = ()) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude and _netns_of(int(name)) == netns:
            pids.append(int(name))
    return pids


def _describe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmdline = "?"
    return f"{pid}: {cmdline.strip()[:200]}"


def _kill_netns(netns: str, keep: int | None = None) -> list[str]:
    """SIGKILL every process in the namespace (but `keep`); their descriptions."""
    seen: list[str] = []
    for _ in range(50):
        pids = [p for p in processes_in_netns(netns) if p != keep]
        if not pids:
            break
        for pid in pids:
            desc = _describe(pid)
            if desc not in seen:
                seen.append(desc)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return seen


class NetnsRun:
    """A command started in a new network namespace with loopback up. wait() collects it; whatever is still in
    the namespace then (the command's own leftovers, in any session) is killed and listed."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None):
        unshare = netns_unshare()
        if unshare is None:
            raise RuntimeError(netns_skip_reason() or "no network namespace")
        ours = _netns_of(os.getpid())
        self.proc = subprocess.Popen(
            [*unshare, "--", "sh", "-c", PRELUDE, "sh", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        # unshare calls unshare(2), then execs: the pid's namespace changes soon after the start.
        netns = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            netns = _netns_of(self.proc.pid)
            if netns is None or netns != ours or self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.netns = netns if netns != ours else None

    def wait(self, timeout_s: float) -> NetnsResult:
        leftovers: list[str] = []
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            leftovers = self.kill()
            out, err = self.proc.communicate()
        if self.netns:
            leftovers += _kill_netns(self.netns)
        return NetnsResult(None if timed_out else self.proc.returncode, out, err, timed_out, leftovers)

    def kill(self) -> list[str]:
        """SIGKILL everything in the namespace and the command's session; what was killed in the namespace."""
        killed = _kill_netns(self.netns) if self.netns else []
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return killed


def run_in_netns(
    argv: list[str],
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> NetnsResult:
    """Run argv in a new network namespace with loopback up; kill whatever is left in it at the end."""
    return NetnsRun(argv, env, cwd).wait(timeout_s)


def start_python_in_netns(script: str | Path, args: list[str], env: dict[str, str] | None = None) -> NetnsRun:
    """Start a Python script file with this interpreter in a new network namespace; collect it with wait()."""
    return NetnsRun([sys.executable, str(script), *args], env)


def run_python_in_netns(
    script: str | Path, args: list[str], timeout_s: float, env: dict[str, str] | None = None
) -> NetnsResult:
    """Run a Python script file with this interpreter in a new network namespace."""
    return start_python_in_netns(script, args, env).wait(timeout_s)
