"""Which container engines this machine really has: an engine counts only once it has run a container.

A binary on PATH proves little: Docker's client without a daemon, or a Podman whose runtime cannot create
cgroups or set rlimits on this host, would take every container job the fabric sends and fail it. So the agent
runs a tiny test container with each candidate at start-up, from a local image (`--pull=never`: no registry is
contacted), bounded in time, and reports only the engines that ran it. Nothing runs unless the provider asked
for containers (CETI_CONTAINER_ENGINE or the agent's option): the default is off.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass

from ceti.agent.containers import EngineConfig, engine_candidates

logger = logging.getLogger("ceti.agent")

PROBE_TIMEOUT_S = 30.0
PROBE_OUTPUT = "ceti-engine-ok"


@dataclass(frozen=True)
class Probe:
    engine: EngineConfig
    ok: bool
    detail: str  # why not, or how long the test container took
    seconds: float


def probe(engine: EngineConfig, timeout_s: float = PROBE_TIMEOUT_S) -> Probe:
    """Run `echo ceti-engine-ok` in engine.test_image with the engine's run options; ok only when it printed it."""
    name = f"ceti-probe-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    argv = engine.argv(
        "run",
        "--rm",
        "--pull=never",
        "--name",
        name,
        *engine.run_opts,
        engine.test_image,
        "echo",
        PROBE_OUTPUT,
    )
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, env=env, check=False)
    except FileNotFoundError:
        return Probe(engine, False, f"{engine.binary} is not installed", 0.0)
    except OSError as exc:
        return Probe(engine, False, f"{engine.binary} cannot be run: {exc}", 0.0)
    except subprocess.TimeoutExpired:
        _remove_quietly(engine, name)
        return Probe(engine, False, f"the test container did not finish within {timeout_s:.0f}s", timeout_s)
    seconds = time.monotonic() - started
    if done.returncode == 0 and PROBE_OUTPUT in done.stdout.decode(errors="replace"):
        return Probe(engine, True, f"ran a test container in {seconds:.1f}s", seconds)
    _remove_quietly(engine, name)
    err = done.stderr.decode(errors="replace").strip().splitlines()
    return Probe(engine, False, f"exit {done.returncode}: {err[-1][-300:] if err else 'no output'}", seconds)


def detect(choice: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> list[EngineConfig]:
    """The engines that ran a test container, best first (Podman before Docker); [] when containers are off.
    `choice` as in `engine_candidates` (default: CETI_CONTAINER_ENGINE)."""
    working = []
    for engine in engine_candidates(choice):
        result = probe(engine, timeout_s)
        if result.ok:
            logger.info("container engine %s: %s", engine.name, result.detail)
            working.append(engine)
        else:
            logger.warning(
                "container engine %s left out: %s (command: %s)",
                engine.name, result.detail, shlex.join(engine.argv("run", *engine.run_opts, engine.test_image)),
            )  # fmt: skip
    return working


def _remove_quietly(engine: EngineConfig, name: str) -> None:
    try:
        subprocess.run(engine.remove_argv(name), capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass
