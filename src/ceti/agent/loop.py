"""The agent's reconcile loop: heartbeat with what runs, receive what should run, make it so.

The agent only makes outbound HTTP calls, so it works behind NAT. Lost messages heal on the next heartbeat:
the server's answer is the whole desired state of this node, never a delta.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceti.agent.containers import ContainerExecutor
from ceti.agent.engines import detect
from ceti.agent.executor import AllocationNotFound, ProcessExecutor
from ceti.agent.launchers import GangInfo, LaunchOptions, launch_command
from ceti.agent.state import AgentState
from ceti.agent.verification import ChallengeRunner
from ceti.client import CetiError, Client
from ceti.spec import NodeInfo

log = logging.getLogger("ceti.agent")
STREAMS = ("stdout", "stderr")
HURRY_S = 0.25
# A node of a multi-node job stops its command (LaunchOptions.grace_s), then its engine (up to 10 s): whatever
# grace the server gives, it gets at least this long before the executor kills what is left
GANG_MIN_STOP_GRACE_S = 20.0


@dataclass
class AgentConfig:
    servers: list[str]
    token: str
    data_dir: Path
    info: NodeInfo
    heartbeat_s: float = 2.0
    log_chunk_bytes: int = 64 * 1024
    ca_cert: str | None = None
    # container engine: "off", "auto", "podman", "docker" or a path; None = CETI_CONTAINER_ENGINE (default off)
    containers: str | None = None
    # where the nodes of multi-node jobs keep their engine's temp dirs (Ray's Unix sockets need a short path)
    gang_scratch_root: Path = Path("/tmp/ceti-ray")


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = config.data_dir / "agent.json"
        self.state = AgentState.load(self._state_path)
        self.executor = ProcessExecutor(config.data_dir / "executor")
        # Jobs with an image run as containers, if an engine ran a test container just now; it is reported so.
        engines = detect(config.containers)
        self.containers: ContainerExecutor | None = None
        if engines:
            gpus = [g.index for g in config.info.gpus]
            self.containers = ContainerExecutor(config.data_dir / "containers", engines[0], gpus)
        elif any((config.data_dir / "containers" / "allocations").glob("*")):
            log.warning("containers of an earlier run are left alone: no container engine is enabled and working")
        config.info = config.info.model_copy(update={"container_engines": [e.name for e in engines]})
        self.client = Client(config.servers, config.token, timeout_s=15.0, ca_cert=config.ca_cert, retries=0)
        self.verification = ChallengeRunner(config.servers, config.token, config.ca_cert)  # proof of hardware
        self._stop = threading.Event()
        self._hurry = False
        self._offline_since: float | None = None
        self._gangs: set[str] = set()  # allocations that are nodes of a multi-node job

    # -- life cycle --------------------------------------------------------------------------------

    def run(self, max_iterations: int | None = None) -> None:
        adopted = self.executor.adopt() + (self.containers.adopt() if self.containers else [])
        if adopted:
            log.info("adopted %d allocation(s) left running by an earlier agent: %s", len(adopted), adopted)
        self._register_until_done()
        n = 0
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a malformed answer or a full disk must not take the node's running work down
                log.exception("reconcile step failed; the next heartbeat tries again")
            n += 1
            if max_iterations is not None and n >= max_iterations:
                return
            # after an exit or while a stop is under way, come back sooner: freed capacity is worth the most
            # the moment it is free (a developer job waits on it)
            self._stop.wait(min(self.config.heartbeat_s, HURRY_S) if self._hurry else self.config.heartbeat_s)

    def shutdown(self) -> None:
        self._stop.set()

    def _register_until_done(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                answer = self.client.register_node(self.config.info, self.state.node_id)
            except CetiError as exc:
                if exc.status in (400, 401, 403, 422):
                    raise SystemExit(f"the server refused this agent: {exc.message}") from None
                log.warning("cannot register yet (%s); retrying in %.1fs", exc.message, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.state.node_id = answer["node_id"]
            if answer.get("epoch") is not None and not self._running() and not self.state.unreported:
                self.state.epoch = answer["epoch"]  # a new node, to run nothing: what this agent does
            self.config.heartbeat_s = min(self.config.heartbeat_s, answer.get("heartbeat_interval_s", 2.0))
            self._save()
            log.info("registered as node %s", self.state.node_id)
            return

    # -- one reconcile step ------------------------------------------------------------------------

    def tick(self) -> None:
        self._hurry = False
        for f in self.executor.poll() + (self.containers.poll() if self.containers else []):
            self.state.unreported[f.alloc_id] = {
                "allocation_id": f.alloc_id,
                "exit_code": f.exit_code,
                "stopped": f.stopped,
                "cpu_seconds": f.cpu_seconds,
                "peak_memory_mib": f.peak_memory_mib,
                "wall_s": f.wall_s,
                "reason": f.reason,
            }
        self._save()
        try:
            # every byte of output goes up before the exit is reported, so a finished job has all its logs
            for alloc_id in self._running() + list(self.state.unreported):
                self._ship_logs(alloc_id)
            answer = self.client.heartbeat(
                self.state.node_id, self._running(), list(self.state.unreported.values()), self.state.epoch
            )
        except CetiError as exc:
            self._offline(exc)
            return
        if self._offline_since is not None:
            log.info("server reachable again after %.0fs", time.time() - self._offline_since)
            self._offline_since = None
        self._hurry = bool(self.state.unreported) or bool(answer.get("stop"))
        for alloc_id in list(self.state.unreported):
            self._executor_of(alloc_id).forget(alloc_id)
            if alloc_id in self._gangs:
                self._gangs.discard(alloc_id)
                # the node process removes its engine's temp dir, unless the executor had to kill it
                shutil.rmtree(self.config.gang_scratch_root / alloc_id[:12], ignore_errors=True)
            self.state.log_offsets.pop(alloc_id, None)
        self.state.unreported.clear()
        self._save()
        self._reconcile(answer)

    def _offline(self, exc: CetiError) -> None:
        if exc.status == 404 and "node" in exc.message:
            log.warning("the server no longer knows this node; registering again")
            self.state.node_id = None
            self.state.epoch = -1
            self._register_until_done()
            return
        if self._offline_since is None:
            self._offline_since = time.time()
            log.warning("heartbeat failed (%s); work keeps running, retrying", exc.message)

    def _reconcile(self, answer: dict[str, Any]) -> None:
        epoch = answer.get("epoch", 0)
        if epoch < self.state.epoch:
            log.warning("ignoring a desired state of epoch %d older than %d", epoch, self.state.epoch)
            return
        if answer.get("unchanged") and epoch == self.state.epoch:
            return  # the desired state this node holds is still the server's: nothing to do
        self.state.epoch = epoch
        self.verification.handle(answer.get("verify"))  # runs in its own thread; returns at once
        running = set(self._running())
        desired = {item["allocation_id"]: item for item in answer["run"]}
        for alloc_id, item in desired.items():
            if alloc_id in running or alloc_id in self.state.unreported:
                continue
            try:
                self._start(alloc_id, item)
                log.info("started allocation %s (job %s)", alloc_id, item["job_id"])
            except (OSError, ValueError) as exc:
                log.error("cannot start allocation %s: %s", alloc_id, exc)
                self.state.unreported[alloc_id] = {"allocation_id": alloc_id, "exit_code": 127, "stopped": False,
                                                   "reason": f"the agent could not start it: {exc}"}
        stops = {item["allocation_id"]: item for item in answer["stop"]}
        for alloc_id in running:
            if alloc_id in stops:
                self._executor_of(alloc_id).request_stop(alloc_id,
                                                         self._stop_grace(alloc_id, stops[alloc_id]["grace_s"]))
            elif alloc_id not in desired:
                # fencing: whatever the server no longer wants here (an attempt it gave up on) must stop
                log.warning("allocation %s is not desired by the server; stopping it", alloc_id)
                self._executor_of(alloc_id).request_stop(alloc_id, self._stop_grace(alloc_id, 10.0))
        for alloc_id in stops:
            if alloc_id not in running and alloc_id not in self.state.unreported:
                # asked to stop something never started here: report it stopped so the server can close it
                self.state.unreported[alloc_id] = {"allocation_id": alloc_id, "exit_code": None, "stopped": True,
                                                   "reason": "never started on this node"}
        self._save()

    def _start(self, alloc_id: str, item: dict[str, Any]) -> None:
        if item.get("gang"):
            command, env = self._gang_command(alloc_id, item)
            self.executor.start(alloc_id, command, env, item["files"], item["gpu_indices"])
            self._gangs.add(alloc_id)
        elif not item.get("image"):
            self.executor.start(alloc_id, item["command"], item["env"], item["files"], item["gpu_indices"])
        elif self.containers is None:
            raise ValueError(f"this node has no working container engine to run {item['image']}")
        else:
            self.containers.start(alloc_id, item["image"], item["command"], item["env"], item["files"],
                                  item["gpu_indices"], item.get("cpu_milli", 0), item.get("memory_mib", 0))

    def _gang_command(self, alloc_id: str, item: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """One node of a multi-node job: the engine's node process wraps the job's command (see launchers)."""
        gang = GangInfo.from_dict(item["gang"])
        root = self.config.gang_scratch_root
        root.mkdir(parents=True, exist_ok=True)
        # the engine and the head's command come from the agent's own environment first: Ray needs the same
        # Ray and Python version on every node and in the driver
        env = dict(item["env"])
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH") or os.environ.get("PATH", "")])
        options = LaunchOptions(num_cpus=max(1, item.get("cpu_milli", 1000) // 1000),
                                object_store_mib=max(80, item.get("memory_mib", 512) // 4))
        return launch_command(item["command"], env, gang, root / alloc_id[:12], sys.executable, options)

    def _stop_grace(self, alloc_id: str, grace_s: float) -> float:
        if alloc_id in self._gangs or self._is_gang(alloc_id):
            return max(grace_s, GANG_MIN_STOP_GRACE_S)
        return grace_s

    def _is_gang(self, alloc_id: str) -> bool:
        """A node of a multi-node job started by an earlier agent (adopted): its recorded command says so."""
        try:
            command = self.executor.recorded_command(alloc_id)
        except (OSError, ValueError):
            return False
        return any("ceti/agent/launchers/" in part for part in command[:3])

    def _ship_logs(self, alloc_id: str) -> None:
        offsets = self.state.log_offsets.setdefault(alloc_id, {s: 0 for s in STREAMS})
        for stream in STREAMS:
            while True:
                offset = offsets.get(stream, 0)
                executor = self._executor_of(alloc_id)
                try:
                    data = executor.read_logs(alloc_id, stream, offset, self.config.log_chunk_bytes)
                except AllocationNotFound:  # refused before it started: no output, only the exit to report
                    return
                if not data:
                    break
                text, used = _decode_prefix(data)
                if used == 0:
                    break
                try:
                    answer = self.client.upload_logs(alloc_id, [{"stream": stream, "offset": offset, "data": text}])
                except CetiError as exc:
                    if exc.status in (0, 429) or exc.status >= 500:
                        raise  # the server is away or busy: try again next tick
                    # refused for good (over a limit, a value the database cannot store): skip it, keep beating
                    log.error("log chunk %s/%s@%d refused: %s; skipped", alloc_id, stream, offset, exc.message)
                    answer = {}
                offsets[stream] = offset + used
                self._save()
                if answer.get("truncated"):
                    return
                if len(data) < self.config.log_chunk_bytes:
                    break

    def _running(self) -> list[str]:
        return self.executor.running() + (self.containers.running() if self.containers else [])

    def _executor_of(self, alloc_id: str) -> ProcessExecutor | ContainerExecutor:
        if self.containers is not None and self.containers.alloc_dir(alloc_id).exists():
            return self.containers
        return self.executor

    def _save(self) -> None:
        self.state.save(self._state_path)


def _decode_prefix(data: bytes) -> tuple[str, int]:
    """Decode as much UTF-8 as is complete; a character split across reads waits for the next read."""
    for cut in range(len(data), max(len(data) - 4, 0) - 1, -1):
        try:
            return data[:cut].decode("utf-8"), cut
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), len(data)
