"""Run jobs that name an image as containers, through the engine's command line (Podman first, Docker too).

The container executor keeps the process executor's contract (start, poll, stop, request_stop, running, adopt,
forget, read_logs, usage) by running the engine's *client*, `podman run --rm ...`, as an ordinary job of a
`ProcessExecutor` under its own root. So the client's output is the container's output, in the same log files
shipped by byte offset; its exit status is the container's exit code (125-127 when the engine itself failed);
and it survives the agent and is adopted by the next one exactly like a process job. The runner is a child
subreaper, so the engine's monitor process (conmon) and the container's processes are its descendants: the
usage figures are the runner's (psutil over those processes while it runs, rusage totals once it ended), not
the engine's statistics, which cost a CLI call per sample.

What a container adds:
- a deterministic name, `ceti-<allocation id>`, and labels that name the allocation and this executor's root,
  so that an agent finds its own containers again and never touches anyone else's;
- the job's working directory mounted at /work as the working directory; the job's environment passed in an
  env file (not on the command line, where `ps` shows it; not in the client's own environment, where a job's
  CONTAINERS_CONF or LD_PRELOAD would reconfigure an engine that runs as root). Nothing of the agent's
  environment reaches the container, and CUDA_VISIBLE_DEVICES is not set: the engine hands in exactly the
  allocation's GPUs (CDI devices for Podman, `--gpus device=` for Docker), which the container numbers from 0;
- CPU and memory limits from the allocation;
- stop = `engine stop -t <grace>` (the image's stop signal, then SIGKILL after the grace), run detached so the
  agent's loop never blocks and the grace is kept even if the agent dies meanwhile; a backstop a little later
  kills the client and its descendants, and every ended allocation gets `engine rm -f` once;
- at start-up, containers of this root whose client is gone (an agent killed with its whole process tree) are
  removed; their allocations are then reported lost by the process executor, as for any job without a runner.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import os
import resource
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ceti.agent.executor import (
    ENV_NAME_RE,
    STOP_FILE,
    AllocationNotFound,
    Finished,
    ProcessExecutor,
    _check_alloc_id,
    _check_env,
    _check_gpu_indices,
    _read_json,
)
from ceti.agent.runner import WORK_DIR, write_json_atomic
from ceti.spec.job import IMAGE_RE

logger = logging.getLogger("ceti.agent")

CONTAINER_WORK_DIR = "/work"
ENV_FILE = "container.env"  # in the allocation's directory, not in the work dir the container sees
ENGINE_LOG = "engine.log"  # output of the engine commands the executor runs besides the client
STOP_SLACK_S = 5.0  # after the engine's own grace: time for `engine stop` to finish before the backstop kill
ENGINE_CALL_TIMEOUT_S = 30.0
ENGINE_ERRORS = {
    125: "the container engine failed",
    126: "the container's command cannot be executed",
    127: "the container's command was not found",
}
# Podman 4 lowers its own RLIMIT_NPROC to this; its runtime cannot raise a container above what it has itself
# without CAP_SYS_RESOURCE, so asking for Podman's default (1048576) fails on hosts that drop that capability.
PODMAN_NPROC_CEILING = 32768
PODMAN_GLOBAL_OPTS = ("--runtime", "runc", "--cgroup-manager=cgroupfs")
ENGINES = ("podman", "docker")
OFF = ("", "0", "off", "none", "false", "no")


class ContainerRefused(ValueError):
    """An allocation this node cannot run as a container (GPUs it lacks, an invalid image): refused before start."""


@dataclass(frozen=True)
class EngineConfig:
    """How to call one container engine: its binary, options before the subcommand, options for `run`."""

    binary: str  # "podman", "docker" or a path to either
    global_opts: tuple[str, ...] = ()
    run_opts: tuple[str, ...] = ()
    pull: str = "missing"  # --pull policy for job containers: missing, never, always, newer
    test_image: str = "localhost/ceti-busybox:test"  # what detection runs, never pulled

    @property
    def name(self) -> str:
        """The engine's kind, from the binary's name: 'docker' or 'podman'."""
        return "docker" if "docker" in Path(self.binary).name else "podman"

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *self.global_opts, *args]

    def remove_argv(self, name: str) -> list[str]:
        """Remove a container now, running or not (Podman's `rm -f` would first wait its stop timeout)."""
        return self.argv("rm", "-f", *(("-t", "0") if self.name == "podman" else ()), name)

    @classmethod
    def for_engine(cls, engine: str, env: dict[str, str] | None = None) -> EngineConfig:
        """The config for `engine`, with options from CETI_CONTAINER_GLOBAL_OPTS / CETI_CONTAINER_RUN_OPTS /
        CETI_CONTAINER_PULL / CETI_CONTAINER_TEST_IMAGE when set (shell words), else the working defaults."""
        env = dict(os.environ if env is None else env)
        kind = "docker" if "docker" in Path(engine).name else "podman"
        global_opts = env.get("CETI_CONTAINER_GLOBAL_OPTS")
        run_opts = env.get("CETI_CONTAINER_RUN_OPTS")
        return cls(
            binary=engine,
            global_opts=tuple(shlex.split(global_opts)) if global_opts is not None else _default_global(kind),
            run_opts=tuple(shlex.split(run_opts)) if run_opts is not None else _default_run(kind),
            pull=env.get("CETI_CONTAINER_PULL") or "missing",
            test_image=env.get("CETI_CONTAINER_TEST_IMAGE") or cls.test_image,
        )


def engine_candidates(choice: str | None = None, env: dict[str, str] | None = None) -> list[EngineConfig]:
    """The engines to try, best first: `choice` (or CETI_CONTAINER_ENGINE) is 'off' (the default: none), 'auto'
    (every engine on PATH, Podman first) or one engine's name or path."""
    env = dict(os.environ if env is None else env)
    choice = (choice if choice is not None else env.get("CETI_CONTAINER_ENGINE", "off")).strip()
    if choice.lower() in OFF:
        return []
    if choice.lower() == "auto":
        return [EngineConfig.for_engine(e, env) for e in ENGINES if shutil.which(e)]
    return [EngineConfig.for_engine(choice, env)]


def _default_global(kind: str) -> tuple[str, ...]:
    # Debian's Podman with its default crun failed on cgroups here; runc with cgroupfs works on v1 and v2 hosts.
    return PODMAN_GLOBAL_OPTS if kind == "podman" else ()


def _default_run(kind: str) -> tuple[str, ...]:
    """Podman asks the runtime for rlimits above the agent's own by default (nofile 1048576); without
    CAP_SYS_RESOURCE that fails, and Podman 4 ignores `--ulimit host`. So give the container the agent's own
    hard limits, which any process may keep."""
    if kind != "podman":
        return ()
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], PODMAN_NPROC_CEILING)
    return ("--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}")


def container_name(alloc_id: str) -> str:
    return f"ceti-{alloc_id}"


class ContainerExecutor:
    """The process executor's contract for container jobs; see the module's docstring."""

    def __init__(self, root: Path, engine: EngineConfig, node_gpus: list[int] | None = None):
        self.root = Path(root)
        self.engine = engine
        self.node_gpus = set(node_gpus or [])
        self.processes = ProcessExecutor(self.root)
        # Containers are labelled with this executor's root, so agents sharing a machine keep to their own.
        self.owner = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        self._removed: set[str] = set()  # ended allocations whose container was removed
        self._engine_calls: list[subprocess.Popen[bytes]] = []  # detached `engine stop`s to reap

    # --- starting -----------------------------------------------------------------------------------------

    def start(
        self,
        alloc_id: str,
        image: str,
        command: list[str],
        env: dict[str, str],
        files: dict[str, str],
        gpu_indices: list[int],
        cpu_milli: int = 0,
        memory_mib: int = 0,
    ) -> None:
        """Start the container; nothing happens when the allocation already exists. A request this node
        cannot honour raises ContainerRefused (a ValueError) before anything runs."""
        _check_alloc_id(alloc_id)
        _check_env(env)
        if not isinstance(image, str) or not IMAGE_RE.match(image):
            raise ContainerRefused(f"{image!r} is not an image reference")
        if any(not isinstance(a, str) or "\x00" in a for a in command):
            raise ContainerRefused("command must be a list of strings")
        gpus = self._check_gpus(gpu_indices)
        if (self.processes.alloc_dir(alloc_id)).exists():
            return
        env_file = self._write_env_file(alloc_id, {**env, "CETI_ALLOCATION_ID": alloc_id})
        argv = self.engine.argv(
            "run", "--rm", "--name", container_name(alloc_id),
            "--label", f"ceti.allocation={alloc_id}", "--label", f"ceti.owner={self.owner}",
            f"--pull={self.engine.pull}",
            *self.engine.run_opts,
            "--volume", f"{self.processes.alloc_dir(alloc_id).absolute() / WORK_DIR}:{CONTAINER_WORK_DIR}",
            "--workdir", CONTAINER_WORK_DIR,
            "--env-file", str(env_file),
            *self._gpu_opts(gpus),
            *self._limit_opts(cpu_milli, memory_mib),
            image, *command,
        )  # fmt: skip
        try:
            # The client runs with the agent's environment (its HOME, not the job's directory, where a job's
            # files could reconfigure the engine) and no GPUs: the container gets both from the engine.
            self.processes.start(alloc_id, argv, _engine_environment(), files, [])
        except BaseException:
            if not (self.processes.alloc_dir(alloc_id) / "state.json").exists():
                env_file.unlink(missing_ok=True)
            raise
        logger.info("allocation %s: container %s from %s", alloc_id, container_name(alloc_id), image)

    def _check_gpus(self, gpu_indices: list[int]) -> list[int]:
        try:
            gpus = _check_gpu_indices(gpu_indices)
        except ValueError as exc:
            raise ContainerRefused(str(exc)) from None
        missing = sorted(set(gpus) - self.node_gpus)
        if missing:
            have = f"GPUs {sorted(self.node_gpus)}" if self.node_gpus else "no GPUs"
            raise ContainerRefused(f"the allocation asks for GPU(s) {missing}, but this node has {have}")
        if gpus and self.engine.name == "podman" and not _cdi_has_nvidia_gpus():
            raise ContainerRefused(
                "no CDI specification for nvidia.com/gpu: generate one with `nvidia-ctk cdi generate`"
            )
        return gpus

    def _gpu_opts(self, gpus: list[int]) -> list[str]:
        if not gpus:
            return []
        if self.engine.name == "docker":
            # docker parses the value as CSV: several devices need the inner quotes
            return ["--gpus", '"device=' + ",".join(str(i) for i in gpus) + '"']
        return [opt for i in gpus for opt in ("--device", f"nvidia.com/gpu={i}")]

    @staticmethod
    def _limit_opts(cpu_milli: int, memory_mib: int) -> list[str]:
        opts = []
        if cpu_milli and cpu_milli > 0:
            opts.append(f"--cpus={cpu_milli / 1000:.3f}")
        if memory_mib and memory_mib > 0:
            opts.append(f"--memory={int(memory_mib)}m")
        return opts

    def _write_env_file(self, alloc_id: str, env: dict[str, str]) -> Path:
        """KEY=VALUE lines, taken literally by both engines; a value with a newline cannot be written so."""
        for key, value in env.items():
            if "\n" in value or "\r" in value:
                raise ContainerRefused(
                    f"environment variable {key}: a container's variables cannot hold newlines"
                )
        folder = self.root / "env"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{alloc_id}.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{k}={v}\n" for k, v in env.items()))
        return path

    # --- stopping -----------------------------------------------------------------------------------------

    def request_stop(self, alloc_id: str, grace_s: float = 10.0) -> None:
        """`engine stop -t grace` in the background; asking again may shorten the grace, never lengthen it."""
        alloc_dir = self._existing_dir(alloc_id)
        if alloc_id not in self.processes.running():
            return
        now = time.time()
        grace_s = max(0.0, grace_s)
        previous = _read_json(alloc_dir / STOP_FILE)
        if previous is not None and float(previous["deadline"]) <= now + grace_s + STOP_SLACK_S:
            return  # already stopping, at least as soon
        # The process executor's stop record: poll() reports the allocation as stopped, and past the deadline it
        # kills the client and its descendants (the container's processes among them) should the engine not.
        write_json_atomic(
            alloc_dir / STOP_FILE,
            {
                "requested_at": previous["requested_at"] if previous else now,
                "deadline": now + grace_s + STOP_SLACK_S,
            },
        )
        self._engine_in_background(
            alloc_id, "stop", "-t", str(int(grace_s + 0.999)), container_name(alloc_id)
        )

    def stop(self, alloc_id: str, grace_s: float = 10.0) -> Finished | None:
        """Stop and wait until the client has ended and the container is removed."""
        self.request_stop(alloc_id, grace_s)
        give_up = time.monotonic() + grace_s + STOP_SLACK_S + 5.0
        while time.monotonic() < give_up and alloc_id in self.processes.running():
            self.processes.poll()  # escalates past the deadline
            time.sleep(0.05)
        finished = self.processes.stop(alloc_id, 0.0)
        self._remove(alloc_id)
        return self._explained(finished) if finished is not None else None

    # --- watching -----------------------------------------------------------------------------------------

    def poll(self) -> list[Finished]:
        """As ProcessExecutor.poll; each ended allocation's container is removed once (usually `--rm` did)."""
        self._reap_engine_calls()
        out = []
        for finished in self.processes.poll():
            self._remove(finished.alloc_id)
            out.append(self._explained(finished))
        return out

    def running(self) -> list[str]:
        return self.processes.running()

    def adopt(self) -> list[str]:
        """At start-up: the allocations whose client still runs; containers of ours without one are removed."""
        alive = self.processes.adopt()
        for name, alloc_id in self._our_containers():
            if alloc_id not in alive:
                logger.warning("container %s has no client left (the agent died with it); removing it", name)
                self._engine_call(self.engine.remove_argv(name))
        return alive

    def forget(self, alloc_id: str) -> None:
        self.processes.forget(alloc_id)
        (self.root / "env" / f"{alloc_id}.env").unlink(missing_ok=True)
        self._removed.discard(alloc_id)

    def read_logs(
        self, alloc_id: str, stream: Literal["stdout", "stderr"], offset: int, max_bytes: int
    ) -> bytes:
        return self.processes.read_logs(alloc_id, stream, offset, max_bytes)

    def usage(self, alloc_id: str) -> dict[str, float]:
        """The runner's figures: the client, conmon and the container's processes are all its descendants."""
        return self.processes.usage(alloc_id)

    def alloc_dir(self, alloc_id: str) -> Path:
        return self.processes.alloc_dir(alloc_id)

    # --- the engine ---------------------------------------------------------------------------------------

    def _remove(self, alloc_id: str) -> None:
        if alloc_id in self._removed:
            return
        self._engine_call(
            self.engine.remove_argv(container_name(alloc_id)), self.processes.alloc_dir(alloc_id)
        )
        (self.root / "env" / f"{alloc_id}.env").unlink(missing_ok=True)
        self._removed.add(alloc_id)

    def _our_containers(self) -> list[tuple[str, str]]:
        """(name, allocation id) of every container labelled with this executor's root, running or not."""
        out = self._engine_call(
            self.engine.argv(
                "ps", "-a", "--filter", f"label=ceti.owner={self.owner}", "--format", "{{.Names}}"
            )
        )
        names = out.split() if out else []
        return [(n, n.removeprefix("ceti-")) for n in names if n.startswith("ceti-")]

    def _engine_call(self, argv: list[str], alloc_dir: Path | None = None) -> str | None:
        """Run an engine command to its end (bounded); its stdout, or None when it failed (logged)."""
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=ENGINE_CALL_TIMEOUT_S,
                env=_engine_environment(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("%s failed: %s", shlex.join(argv), exc)
            return None
        if alloc_dir is not None and alloc_dir.is_dir() and (done.stdout or done.stderr):
            with open(alloc_dir / ENGINE_LOG, "ab") as log:
                log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            logger.debug("%s exited %d: %s", shlex.join(argv), done.returncode, done.stderr[-500:])
            return None
        return done.stdout.decode(errors="replace")

    def _engine_in_background(self, alloc_id: str, *args: str) -> None:
        argv = self.engine.argv(*args)
        try:
            with open(self.processes.alloc_dir(alloc_id) / ENGINE_LOG, "ab") as log:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_engine_environment(),
                    start_new_session=True,  # outlives the agent, so the grace is kept even if the agent dies
                )  # fmt: skip
        except OSError as exc:  # the backstop in poll() still ends the allocation at its deadline
            logger.warning("allocation %s: cannot run %s: %s", alloc_id, shlex.join(argv), exc)
            return
        self._engine_calls.append(proc)

    def _reap_engine_calls(self) -> None:
        self._engine_calls = [p for p in self._engine_calls if p.poll() is None]

    def _explained(self, finished: Finished) -> Finished:
        """An exit status of the engine's own (125-127) gets a reason, with the client's last word on it."""
        if finished.reason or finished.exit_code not in ENGINE_ERRORS:
            return finished
        try:
            tail = self.processes.read_logs(finished.alloc_id, "stderr", 0, 1 << 20).decode(errors="replace")
        except AllocationNotFound:
            tail = ""
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        reason = ENGINE_ERRORS[finished.exit_code] + (f": {last[-300:]}" if last else "")
        return dataclasses.replace(finished, reason=reason)

    def _existing_dir(self, alloc_id: str) -> Path:
        _check_alloc_id(alloc_id)
        alloc_dir = self.processes.alloc_dir(alloc_id)
        if not alloc_dir.is_dir():
            raise AllocationNotFound(alloc_id)
        return alloc_dir


def _engine_environment() -> dict[str, str]:
    """The agent's environment minus its own settings (its token): the engine may need HOME, XDG_*, proxies."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CETI_") and ENV_NAME_RE.match(k)}


def _cdi_has_nvidia_gpus() -> bool:
    for folder in ("/etc/cdi", "/var/run/cdi"):
        for path in glob.glob(f"{folder}/*.yaml") + glob.glob(f"{folder}/*.json"):
            try:
                if "nvidia.com/gpu" in Path(path).read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False
