"""One node of a multi-node job on Ray: what the executor runs for each allocation of an `engine: ray` job.

    python -I .../ceti/agent/launchers/ray.py head   [options] -- <user command...>
    python -I .../ceti/agent/launchers/ray.py worker [options]
    (or python -m ceti.agent.launchers.ray ...)

`build_command` turns the user's command and the allocation's gang into that argv; the runner, logs, exit
code, stop with grace and usage stay the executor's, as for any other job. The node process:

- head (rank 0): runs `ray start --head --block` in its own session, waits (bounded) until Ray is up, runs the
  user command in its own process group with RAY_ADDRESS=<bind address>:<port base>, waits for it, stops Ray
  and exits with the command's exit code (128 + N when signal N ended it).
- worker (rank > 0): waits (bounded) until the head's GCS port answers, runs `ray start --address ... --block`
  (again until the same deadline if it fails) and stays until SIGTERM, until Ray on this node exits, or until
  the head has not answered for `--head-gone-s` (the job is over: exit 0).
- SIGTERM or SIGINT: the head sends SIGTERM once to the user command's process group, gives it `--grace-s`,
  SIGKILLs what is left of it, then stops Ray, and exits with the command's code; a worker stops Ray and exits
  128 + 15. Under the runner, the node process is alone in the runner's process group, so the runner's SIGTERM
  to its group reaches only it, and every process of the job still gets SIGTERM exactly once.

Stopping Ray never uses `ray stop`: it kills every Ray process of the machine's user, and several allocations
(of one job or of different jobs) may share a machine. Instead the node process is a child subreaper: SIGTERM
to `ray start --block` makes Ray take its own processes down (its 30 s SIGTERM drain turned off), and whatever
still lives below the node process after that is SIGTERMed, then SIGKILLed. Ray does leave some behind (a
worker node's ray::DashboardAgent and ray::RuntimeEnvAgent outlive their raylet; their command lines no
longer name the temp dir, so only ancestry or environment finds them).

Security. Ray's ports give anyone who reaches them code execution on the node. Nothing here ever asks Ray to
bind 0.0.0.0: Ray gets the node's address on the job's network (--node-ip-address, never an unspecified
address), its ports only from the allocation's block, and a token when the gang has one (RAY_AUTH_MODE=token).
But Ray 2.60 itself listens on all interfaces ([::] or 0.0.0.0) for the GCS, the raylet (node manager, object
manager), every worker's gRPC port, the dashboard agent's gRPC port and the metrics ports whenever the node
address is not a loopback address; only the dashboard agent's HTTP port, the runtime env agent and the Ray
client server bind the node address alone. Where the machine has other interfaces, firewall the block to the
gang's peers or give the gang a token.

Ports, at PORT_OFFSETS from the block's first port: every port Ray opens is inside the block, none is left to
Ray's defaults (two of them, the autoscaler's and the dashboard's metrics ports, only through environment
variables). From FIRST_WORKER_PORT to the block's end are Ray's worker ports: every Ray worker process, actor
and driver on the node holds one, so the block's size bounds how many can run there.

The temp dir (--temp-dir) must be short: Ray keeps Unix sockets at
<temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store, 66 bytes below it, and a socket path must
stay under 107 bytes, hence MAX_TEMP_DIR_BYTES (something like /tmp/ceti-ray/<short id>). The node process
creates it (it must not exist yet: what the node creates is its own to delete) and removes it, Ray's log files
with it, when it exits; Ray prints the tail of a crashed process's log to the node's output first.

Only the standard library and psutil are imported, so it runs under `python -I` (the job's PYTHONPATH or
PYTHONHOME cannot break it). `ray` is the one on the job's PATH (--ray to choose another): the same Ray as the
user's driver. Linux only, like the runner's subreaper.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from ceti.agent.launchers import GangInfo, LaunchOptions

ENGINE = "ray"
PORT_OFFSETS = {
    "gcs": 0,  # the head's --port (workers leave it unused)
    "node_manager": 1,
    "object_manager": 2,
    "ray_client_server": 3,  # head only
    "dashboard_agent_listen": 4,
    "dashboard_agent_grpc": 5,
    "metrics_export": 6,
    "runtime_env_agent": 7,
    "autoscaler_metrics": 8,  # head only; Ray reads it from AUTOSCALER_METRIC_PORT (default 44217)
    "dashboard_metrics": 9,  # head only; Ray reads it from DASHBOARD_METRIC_PORT (default 44227)
    "dashboard": 10,  # head only; the dashboard is off, but Ray's minimal dashboard process gets the flag
}
FIRST_WORKER_PORT = 11
MIN_PORT_COUNT = 16
MAX_TEMP_DIR_BYTES = 40
DEFAULT_GRACE_S = 5.0
START_TIMEOUT_S = 120.0  # head: ray start until it is up; worker: until it has joined
HEAD_GONE_S = 10.0
RAY_STOP_TIMEOUT_S = 10.0  # SIGTERM to `ray start --block` until it has exited; then SIGKILL
LEFTOVER_GRACE_S = 2.0
POLL_S = 0.1
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_STOPPED = 128 + signal.SIGTERM
READY_FILE = "ray_current_cluster"  # Ray writes it into its temp dir once `ray start` has the node up


# --- the argv the executor runs (used by ceti.agent.launchers) -------------------------------------------


def build_command(
    command: list[str],
    env: dict[str, str],
    gang: GangInfo,
    scratch: Path,
    python: str,
    options: LaunchOptions,
) -> tuple[list[str], dict[str, str]]:
    check_temp_dir(scratch)
    argv = [python, "-I", str(Path(__file__).resolve()), "head" if gang.rank == 0 else "worker"]
    argv += ["--bind-address", gang.bind_address, "--port-base", str(gang.port_base)]
    argv += ["--port-count", str(gang.port_count), "--temp-dir", str(scratch)]
    argv += ["--grace-s", _number(options.grace_s), "--head-gone-s", _number(options.head_gone_s)]
    if options.num_cpus is not None:
        argv += ["--num-cpus", str(options.num_cpus)]
    if options.object_store_mib is not None:
        argv += ["--object-store-mib", str(options.object_store_mib)]
    if gang.rank == 0:
        argv += ["--nodes", str(gang.size), "--", *command]
    else:
        argv += ["--head-address", gang.head_address, "--head-port", str(gang.head_port)]
    job_env = dict(env)
    job_env.pop("RAY_ADDRESS", None)  # the head sets it for the user command; `ray start` must not see one
    if gang.auth_token:
        job_env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=gang.auth_token)
    else:
        # Explicit, so a ~/.ray/auth_token on one node cannot turn tokens on there alone.
        job_env["RAY_AUTH_MODE"] = "disabled"
        job_env.pop("RAY_AUTH_TOKEN", None)
    return argv, job_env


def check_temp_dir(path: Path) -> None:
    if not path.is_absolute():
        raise ValueError(f"Ray's temp dir must be an absolute path, not {str(path)!r}")
    if len(os.fsencode(str(path))) > MAX_TEMP_DIR_BYTES:
        raise ValueError(
            f"Ray's temp dir {str(path)!r} is longer than {MAX_TEMP_DIR_BYTES} bytes: Ray's Unix socket "
            "paths below it would pass the 107-byte limit (use something like /tmp/ceti-ray/<short id>)"
        )


def _number(value: float) -> str:
    return f"{value:g}"


def ray_start_argv(
    ray: str,
    *,
    head: bool,
    bind_address: str,
    port_base: int,
    port_count: int,
    temp_dir: Path,
    num_cpus: int,
    num_gpus: int,
    head_address: str | None = None,
    head_port: int | None = None,
    object_store_mib: int | None = None,
    logs_to_stderr: bool = False,
) -> list[str]:
    """`ray start ... --block` for one node, every port it opens taken from the block."""
    if port_count < MIN_PORT_COUNT:
        raise ValueError(f"Ray needs a block of at least {MIN_PORT_COUNT} ports, not {port_count}")

    def port(name: str) -> str:
        return str(port_base + PORT_OFFSETS[name])

    argv = [ray, "start", "--block", "--node-ip-address", bind_address]
    if head:
        argv += ["--head", "--port", port("gcs"), "--ray-client-server-port", port("ray_client_server")]
        argv += ["--include-dashboard=false", "--dashboard-port", port("dashboard")]
    else:
        if head_address is None or head_port is None:
            raise ValueError("a worker needs the head's address and port")
        argv += ["--address", _host_port(head_address, head_port)]
    argv += [
        "--node-manager-port", port("node_manager"),
        "--object-manager-port", port("object_manager"),
        "--dashboard-agent-listen-port", port("dashboard_agent_listen"),
        "--dashboard-agent-grpc-port", port("dashboard_agent_grpc"),
        "--metrics-export-port", port("metrics_export"),
        "--runtime-env-agent-port", port("runtime_env_agent"),
        "--min-worker-port", str(port_base + FIRST_WORKER_PORT),
        "--max-worker-port", str(port_base + port_count - 1),
        "--temp-dir", str(temp_dir),
        "--num-cpus", str(num_cpus),
        "--num-gpus", str(num_gpus),
        "--disable-usage-stats",
    ]  # fmt: skip
    if object_store_mib is not None:
        argv += ["--object-store-memory", str(object_store_mib * 1024 * 1024)]
    if logs_to_stderr:
        argv.append("--no-redirect-output")
    return argv


def ray_start_env(env: dict[str, str], port_base: int) -> dict[str, str]:
    """`ray start`'s environment: the job's, plus the two metrics ports Ray only takes from variables."""
    out = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    out.update(
        AUTOSCALER_METRIC_PORT=str(port_base + PORT_OFFSETS["autoscaler_metrics"]),
        DASHBOARD_METRIC_PORT=str(port_base + PORT_OFFSETS["dashboard_metrics"]),
        # On SIGTERM Ray would otherwise drain the node for up to 30 s before stopping; the user command has
        # had its grace already when Ray is stopped.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return out


def gpu_count(env: dict[str, str]) -> int:
    """The GPUs the agent gave the job: CUDA_VISIBLE_DEVICES (unset counts as none: Ray never takes all)."""
    value = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    return len([d for d in value.split(",") if d.strip()]) if value else 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the node process -------------------------------------------------------------------------------------


class _Node:
    def __init__(self, args: argparse.Namespace, command: list[str]):
        self.args = args
        self.command = command
        self.head = args.role == "head"
        self.temp_dir = Path(args.temp_dir)
        self.stop_requested = False
        self.statuses: dict[int, int] = {}  # exit statuses of our children, collected by reap()
        self.ray: subprocess.Popen[bytes] | None = None
        self.user: subprocess.Popen[bytes] | None = None
        self.made_temp_dir = False

    def say(self, text: str) -> None:
        try:
            os.write(2, f"ceti ray {self.args.role}: {text}\n".encode(errors="replace"))
        except OSError:
            pass

    def on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    # --- children and their exits ---

    def reap(self) -> None:
        """Collect every exited child, our own and the orphans re-parented to us (we are a subreaper)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.statuses[pid] = os.waitstatus_to_exitcode(status)

    def exit_code(self, proc: subprocess.Popen[bytes] | None) -> int | None:
        """Its exit code (-N for signal N) once it has ended, else None."""
        if proc is None:
            return None
        self.reap()
        if proc.pid in self.statuses:
            proc.returncode = self.statuses[proc.pid]  # reaped here: keep Popen from waiting for it again
        return proc.returncode

    def wait_for(self, proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while (code := self.exit_code(proc)) is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return code

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early for a stop."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    # --- Ray ---

    def ray_binary(self) -> str | None:
        found = shutil.which(self.args.ray, path=os.environ.get("PATH"))
        if found is None:
            self.say(f"cannot find {self.args.ray!r} on PATH: the job's environment must provide Ray")
        return found

    def start_ray(self, ray: str) -> subprocess.Popen[bytes] | None:
        argv = ray_start_argv(
            ray,
            head=self.head,
            bind_address=self.args.bind_address,
            port_base=self.args.port_base,
            port_count=self.args.port_count,
            temp_dir=self.temp_dir,
            num_cpus=self.args.num_cpus if self.args.num_cpus is not None else cpu_count(),
            num_gpus=gpu_count(dict(os.environ)),
            head_address=self.args.head_address,
            head_port=self.args.head_port,
            object_store_mib=self.args.object_store_mib,
            logs_to_stderr=self.args.ray_logs_to_stderr,
        )
        (self.temp_dir / READY_FILE).unlink(missing_ok=True)
        try:
            # Its own session: the runner's SIGTERM to its group does not reach Ray; we stop Ray after the
            # user command has had its grace.
            proc = subprocess.Popen(
                argv,
                env=ray_start_env(dict(os.environ), self.args.port_base),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self.say(f"cannot start {ray!r}: {exc}")
            return None
        self.statuses.pop(proc.pid, None)  # an orphan reaped earlier may have had the same pid
        return proc

    def ray_ready(self) -> bool:
        if not (self.temp_dir / READY_FILE).exists():
            return False
        return not self.head or _port_open(self.args.bind_address, self.args.port_base, 1.0)

    def wait_until_ray_is_up(self, deadline: float) -> str:
        """'up', 'exited', 'stopped' or 'timeout'."""
        assert self.ray is not None
        while True:
            if self.stop_requested:
                return "stopped"
            if self.exit_code(self.ray) is not None:
                return "exited"
            if self.ray_ready():
                return "up"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(0.25)

    def stop_ray(self) -> None:
        if self.ray is not None and self.exit_code(self.ray) is None:
            _signal(self.ray.pid, signal.SIGTERM)
            if self.wait_for(self.ray, RAY_STOP_TIMEOUT_S) is None:
                self.say(f"ray start did not stop within {RAY_STOP_TIMEOUT_S:.0f}s; killing it")
                _killpg(self.ray.pid, signal.SIGKILL)
                _signal(self.ray.pid, signal.SIGKILL)
                self.wait_for(self.ray, 2.0)

    # --- leftovers ---

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(os.getpid()).children(recursive=True)
        except psutil.Error:
            return []
        alive = []
        for p in found:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                continue
        return alive

    def end_leftovers(self) -> None:
        """Whatever still runs below us (Ray orphans, the user command's leftovers): SIGTERM, then SIGKILL."""
        self.reap()
        left = self.descendants()
        if not left:
            return
        self.say(f"ending {len(left)} leftover process(es): {', '.join(sorted({_name(p) for p in left}))}")
        for p in left:
            _signal(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
            if not self.descendants():
                return
        for _ in range(20):  # a forking leftover may add processes while we kill
            self.reap()
            left = self.descendants()
            if not left:
                return
            for p in left:
                _signal(p.pid, signal.SIGKILL)
            time.sleep(0.05)

    def cleanup(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.stop_ray()
        self.end_leftovers()
        if self.made_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # --- the two roles ---

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        _become_subreaper()
        try:
            check_temp_dir(self.temp_dir)
            self.temp_dir.parent.mkdir(parents=True, exist_ok=True)
            self.temp_dir.mkdir(mode=0o700)
        except (ValueError, OSError) as exc:
            self.say(f"cannot use {str(self.temp_dir)!r} as Ray's temp dir: {exc}")
            return 1
        self.made_temp_dir = True
        try:
            return self.run_head() if self.head else self.run_worker()
        finally:
            self.cleanup()

    def run_head(self) -> int:
        ray = self.ray_binary()
        if ray is None:
            return EXIT_NOT_FOUND
        address = _host_port(self.args.bind_address, self.args.port_base)
        self.say(f"starting the Ray head at {address}")
        self.ray = self.start_ray(ray)
        if self.ray is None:
            return 1
        outcome = self.wait_until_ray_is_up(time.monotonic() + self.args.start_timeout_s)
        if outcome == "stopped":
            return EXIT_STOPPED
        if outcome == "exited":
            self.say(f"ray start exited with code {self.ray.returncode} before the head was up")
            return 1
        if outcome == "timeout":
            self.say(f"the Ray head was not up within {self.args.start_timeout_s:.0f}s")
            return 1
        if self.args.nodes > 1:
            self.say(f"the Ray head is up at {address}; waiting for {self.args.nodes - 1} more node(s) to join")
            joined = self.wait_for_nodes(address, time.monotonic() + self.args.start_timeout_s)
            if joined == "stopped":
                return EXIT_STOPPED
            if joined != "up":
                self.say(f"the gang's {self.args.nodes} nodes did not all join within "
                         f"{self.args.start_timeout_s:.0f}s ({joined})")
                return 1
        self.say(f"the Ray cluster is up at {address}; running the command")
        try:
            self.user = subprocess.Popen(
                self.command, env={**os.environ, "RAY_ADDRESS": address}, process_group=0, close_fds=True
            )
            self.statuses.pop(self.user.pid, None)
        except (FileNotFoundError, NotADirectoryError) as exc:
            self.say(f"cannot start {self.command[0]!r}: {exc}")
            return EXIT_NOT_FOUND
        except OSError as exc:
            self.say(f"cannot start {self.command[0]!r}: {exc}")
            return EXIT_CANNOT_EXECUTE
        ray_reported = False
        while (code := self.exit_code(self.user)) is None:
            if self.stop_requested:
                code = self.stop_user()
                break
            if not ray_reported and self.exit_code(self.ray) is not None:
                ray_reported = True  # the command decides what that means for the job; we keep waiting
                self.say(f"Ray on the head exited (code {self.ray.returncode}) while the command runs")
            time.sleep(POLL_S)
        _killpg(self.user.pid, signal.SIGTERM)  # the command's leftovers in its group; the rest end below
        how = f"was ended by signal {-code}" if code < 0 else f"exited with code {code}"
        self.say(f"the command {how}; stopping Ray")
        return 128 - code if code < 0 else code

    def wait_for_nodes(self, address: str, deadline: float) -> str:
        """'up' once the cluster has --nodes live nodes; 'stopped', or what went wrong. Counted by a short Ray
        driver run with this interpreter (the node process itself imports no Ray)."""
        probe = subprocess.Popen(
            [sys.executable, "-c", _COUNT_NODES, address, str(self.args.nodes), str(max(deadline - time.monotonic(), 1))],
            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, process_group=0,
        )
        self.statuses.pop(probe.pid, None)
        while (code := self.exit_code(probe)) is None:
            if self.stop_requested or self.exit_code(self.ray) is not None:
                _killpg(probe.pid, signal.SIGKILL)
                self.wait_for(probe, 5.0)
                return "stopped" if self.stop_requested else "Ray on the head exited"
            time.sleep(POLL_S)
        out = probe.stdout.read().decode(errors="replace").strip() if probe.stdout else ""
        return "up" if code == 0 else f"{out or 'the node count could not be read'}"

    def stop_user(self) -> int:
        assert self.user is not None
        self.say(f"stopping: SIGTERM to the command, {self.args.grace_s:g}s grace")
        _killpg(self.user.pid, signal.SIGTERM)
        code = self.wait_for(self.user, self.args.grace_s)
        if code is None:
            self.say("the command outlived its grace; killing it")
            _killpg(self.user.pid, signal.SIGKILL)
            code = self.wait_for(self.user, 5.0)
        return code if code is not None else 128 + signal.SIGKILL

    def run_worker(self) -> int:
        ray = self.ray_binary()
        if ray is None:
            return EXIT_NOT_FOUND
        head = _host_port(self.args.head_address, self.args.head_port)
        deadline = time.monotonic() + self.args.start_timeout_s
        said_waiting = False
        while True:
            while not _port_open(self.args.head_address, self.args.head_port, 1.0):
                if self.stop_requested:
                    return EXIT_STOPPED
                if time.monotonic() >= deadline:
                    self.say(f"the Ray head at {head} did not answer within {self.args.start_timeout_s:.0f}s")
                    return 1
                if not said_waiting:
                    self.say(f"waiting for the Ray head at {head}")
                    said_waiting = True
                self.sleep(0.5)
            self.say(f"joining the Ray head at {head} as {self.args.bind_address}")
            self.ray = self.start_ray(ray)
            if self.ray is None:
                return 1
            outcome = self.wait_until_ray_is_up(deadline)
            if outcome == "up":
                break
            if outcome == "stopped":
                return EXIT_STOPPED
            if outcome == "timeout":
                self.say(f"could not join the Ray head at {head} within {self.args.start_timeout_s:.0f}s")
                return 1
            self.say(f"ray start exited with code {self.ray.returncode} before joining; trying again")
            self.end_leftovers()  # what the failed start left would hold the block's ports
            self.sleep(2.0)
        self.say(f"joined the Ray head at {head}")
        unanswered_since: float | None = None
        next_check = time.monotonic()
        while True:
            if self.stop_requested:
                self.say("stopping Ray on this node")
                return EXIT_STOPPED
            if self.exit_code(self.ray) is not None:
                if _port_open(self.args.head_address, self.args.head_port, 2.0):
                    self.say(f"Ray on this node exited (code {self.ray.returncode}) while the head is up")
                    return 1
                self.say(f"Ray on this node exited (code {self.ray.returncode}); the head at {head} is gone")
                return 0
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                if _port_open(self.args.head_address, self.args.head_port, 1.0):
                    unanswered_since = None
                elif unanswered_since is None:
                    unanswered_since = now
                elif now - unanswered_since >= self.args.head_gone_s:
                    self.say(f"the Ray head at {head} is gone; stopping Ray on this node")
                    return 0
            time.sleep(POLL_S)


# Waits until the cluster at argv[1] has argv[2] live nodes, for at most argv[3] seconds.
_COUNT_NODES = """
import sys, time
import ray
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
while True:
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    if alive >= want:
        sys.exit(0)
    if time.monotonic() > deadline:
        print(f"{alive} of {want} nodes joined")
        sys.exit(3)
    time.sleep(0.5)
"""


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return str(p.pid)


def _port_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans below us (Ray's daemons) are re-parented to us, not to init."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# --- command line -----------------------------------------------------------------------------------------


def _ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    if address.is_unspecified:
        raise argparse.ArgumentTypeError(f"{text} would bind every interface; give the node's address")
    return str(address)


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port")
    return value


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    options, command = argv, []
    if "--" in argv:
        i = argv.index("--")
        options, command = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m ceti.agent.launchers.ray", description="One node of a multi-node job on Ray."
    )
    parser.add_argument("role", choices=["head", "worker"])
    parser.add_argument(
        "--bind-address", type=_ip, required=True, help="this node's address on the job's network"
    )
    parser.add_argument("--port-base", type=_port, required=True)
    parser.add_argument("--port-count", type=int, required=True)
    parser.add_argument(
        "--temp-dir", required=True, help=f"Ray's temp dir (absolute, {MAX_TEMP_DIR_BYTES} bytes at most)"
    )
    parser.add_argument("--nodes", type=int, default=1,
                        help="head: run the command once this many nodes (itself included) have joined")
    parser.add_argument("--head-address", type=_ip, help="worker: the head's address")
    parser.add_argument("--head-port", type=_port, help="worker: the head's GCS port (its port base)")
    parser.add_argument("--num-cpus", type=int, help="default: the CPUs this process may run on")
    parser.add_argument("--object-store-mib", type=int, help="default: Ray's (30%% of the machine's memory)")
    parser.add_argument(
        "--grace-s", type=float, default=DEFAULT_GRACE_S, help="head: the command's stop grace"
    )
    parser.add_argument("--start-timeout-s", type=float, default=START_TIMEOUT_S)
    parser.add_argument("--head-gone-s", type=float, default=HEAD_GONE_S)
    parser.add_argument("--ray", default="ray", help="the ray command (default: ray on PATH)")
    parser.add_argument(
        "--ray-logs-to-stderr", action="store_true", help="Ray's own logs to stderr, not files"
    )
    args = parser.parse_args(options)
    if args.port_count < MIN_PORT_COUNT or args.port_base + args.port_count - 1 > 65535:
        parser.error(f"--port-count must be at least {MIN_PORT_COUNT} and the block must end by port 65535")
    if args.role == "head" and not command:
        parser.error("head: give the command after --")
    if args.role == "worker":
        if command:
            parser.error("worker: the command runs on the head only")
        if args.head_address is None or args.head_port is None:
            parser.error("worker: --head-address and --head-port are required")
    return args, command


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    return _Node(args, command).run()


if __name__ == "__main__":
    sys.exit(main())
