"""A simulated agent: speaks the real agent protocol (register, heartbeat, log upload) without running anything.

It behaves like `ceti.agent.loop.Agent` on the wire: it registers with a provider token, heartbeats on a fixed
schedule with what it runs and what finished, ships logs before the heartbeat that reports an exit, and
reconciles with the answer (start what is missing, stop what is asked to stop or no longer desired, report a
stop for something never started). "Running" an allocation is a timer: it is reported running on the next
beat, gets one or two small log chunks, and after a few seconds it is reported finished with exit code 0 and
usage numbers.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ceti.agent.discovery import gpus_of, load_inventory, recorded_inventories
from ceti.loadgen.stats import Latency
from ceti.spec import NodeInfo

REGIONS = ("us-east", "us-west", "eu-west", "ap-south")
# (cpus, memory MiB) that go with each recorded GPU box; CPU-only nodes are drawn separately
GPU_BOX_SHAPE = {
    "1xRTX4090": (16, 64 * 1024),
    "2xT4": (32, 128 * 1024),
    "4xA100-40GB": (64, 512 * 1024),
    "8xH100-80GB-SXM": (128, 2048 * 1024),
}
CPU_SHAPES = ((8, 32 * 1024), (16, 64 * 1024), (32, 128 * 1024), (64, 256 * 1024))


@dataclass
class Counters:
    """What the simulated agents did with the work they were given (allocation ids, each counted once)."""

    assigned: int = 0  # a heartbeat answer asked for it
    started: int = 0  # reported running and acknowledged
    finished: int = 0  # reported finished and acknowledged
    stopped: int = 0  # reported stopped (asked to stop, or fenced)
    registered: int = 0


@dataclass
class Recorder:
    """Latency stats per request kind, shared by every simulated agent and the developer loop."""

    heartbeat: Latency = field(default_factory=lambda: Latency("heartbeat"))
    reconcile: Latency = field(default_factory=lambda: Latency("reconcile"))
    logs: Latency = field(default_factory=lambda: Latency("logs"))
    submit: Latency = field(default_factory=lambda: Latency("submit"))
    register: Latency = field(default_factory=lambda: Latency("register"))
    counters: Counters = field(default_factory=Counters)


_JSON = {"Content-Type": "application/json"}


async def timed_post(session: aiohttp.ClientSession, url: str, stat: Latency, headers: dict[str, str],
                     body: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
    """POST and record the latency; (answer, ms) on success, (None, ms) on any failure (counted as an error).

    The latency includes the wait for a free connection: the session's connector lets at most
    `max_connections` requests be in flight and queues the rest."""
    data = json.dumps(body, separators=(",", ":")).encode()
    sent, started = time.monotonic(), time.perf_counter()
    try:
        async with session.post(url, data=data, headers={**headers, **_JSON}) as response:
            status = response.status
            # read even an error's body: a connection given back unread is closed, not kept alive
            payload = await response.read()
    except asyncio.CancelledError:
        stat.error("unfinished at the end of the run", sent)
        raise
    except TimeoutError:  # aiohttp's own timeouts (ServerTimeoutError and the like) are TimeoutErrors too
        stat.error("timeout", sent)
        return None, (time.perf_counter() - started) * 1000
    except aiohttp.ClientError as exc:
        stat.error(type(exc).__name__, sent)
        return None, (time.perf_counter() - started) * 1000
    ms = (time.perf_counter() - started) * 1000
    if status >= 400:
        stat.error(f"HTTP {status}", sent)
        return None, ms
    stat.ok(ms, sent)
    try:
        return json.loads(payload), ms
    except ValueError:
        return {}, ms


def node_infos(count: int, seed: int = 0) -> list[NodeInfo]:
    """`count` machines: GPU boxes from the recorded NVML descriptions and CPU-only nodes, over a few regions."""
    rng = random.Random(seed)
    boxes: list[tuple[str, Path]] = sorted(recorded_inventories().items())
    inventories = {name: load_inventory(path) for name, path in boxes}
    out = []
    for i in range(count):
        region = REGIONS[i % len(REGIONS)]
        if rng.random() < 0.4:
            cpus, mem = rng.choice(CPU_SHAPES)
            gpus, driver = [], None
        else:
            name = rng.choice([n for n, _ in boxes])
            inv = inventories[name]
            cpus, mem = GPU_BOX_SHAPE.get(name, (32, 128 * 1024))
            # each simulated machine has GPUs of its own: a recorded UUID repeated on every box would read as
            # one card claimed by many nodes (which proof of hardware flags)
            gpus = [g.model_copy(update={"uuid": f"GPU-{uuid.UUID(int=rng.getrandbits(128))}"}) if g.uuid else g
                    for g in gpus_of(inv)]
            driver = inv.driver_version
        out.append(NodeInfo(
            hostname=f"sim-{i:05d}", cpus=cpus, memory_mib=mem, disk_mib=500 * 1024, gpus=gpus, gpu_driver=driver,
            region=region, price_per_gpu_hour=round(rng.uniform(0.2, 3.0), 2) if gpus else 0.0,
            price_per_cpu_hour=round(rng.uniform(0.005, 0.05), 3), os="Linux sim x86_64", agent_version="loadgen",
        ))
    return out


@dataclass
class _Local:
    """One allocation the simulated agent "runs"."""

    alloc_id: str
    started_at: float
    run_s: float
    chunks: int  # log chunks to ship: 1 or 2
    reported_running: bool = False
    shipped: int = 0  # chunks shipped so far
    offset: int = 0  # bytes of stdout shipped so far


class SimAgent:
    def __init__(self, index: int, info: NodeInfo, token: str, base_url: str, heartbeat_s: float,
                 run_s: tuple[float, float], recorder: Recorder, seed: int = 0, timeout_s: float = 30.0):
        self.index = index
        self.info = info
        self.headers = {"Authorization": f"Bearer {token}"}
        self.base = base_url.rstrip("/")
        self.heartbeat_s = heartbeat_s
        self.run_s = run_s
        self.rec = recorder
        self.timeout_s = timeout_s
        self.rng = random.Random(seed * 1_000_003 + index)
        self.node_id: str | None = None
        self.local: dict[str, _Local] = {}
        self.unreported: dict[str, dict[str, Any]] = {}
        self._counted: set[str] = set()  # allocation ids already counted as assigned
        self.epoch = -1  # of the desired state this node holds (none yet)

    async def run(self, session: aiohttp.ClientSession, start_at: float, stop_at: float) -> None:
        """Register at `start_at` (monotonic), then heartbeat every `heartbeat_s` until `stop_at`."""
        await _sleep_until(start_at, stop_at)
        register_tries = 0
        while self.node_id is None and time.monotonic() < stop_at and register_tries < 10:
            register_tries += 1
            answer, _ = await timed_post(session, f"{self.base}/v1/agent/register", self.rec.register, self.headers,
                                         {"node_id": None, "info": self.info.model_dump(mode="json")})
            if answer is not None:
                self.node_id = answer["node_id"]
                if answer.get("epoch") is not None:  # a new node: it runs nothing, as the server wants
                    self.epoch = answer["epoch"]
                self.rec.counters.registered += 1
                break
            await _sleep_until(time.monotonic() + min(2.0 * register_tries, self.heartbeat_s), stop_at)
        if self.node_id is None:
            return
        beat = 0
        first = time.monotonic()
        while True:
            beat += 1
            next_at = first + beat * self.heartbeat_s
            if next_at >= stop_at:
                return
            await _sleep_until(next_at, stop_at)
            if time.monotonic() >= stop_at:
                return
            try:  # one tick never outlives the run by more than a request timeout
                await asyncio.wait_for(self.tick(session), timeout=max(stop_at - time.monotonic(), 0) + self.timeout_s)
            except TimeoutError:
                return
            # a beat that took longer than the interval skips the slots it missed (fixed rate, no burst)
            now = time.monotonic()
            while first + beat * self.heartbeat_s + self.heartbeat_s <= now:
                beat += 1

    async def tick(self, session: aiohttp.ClientSession) -> None:
        now = time.monotonic()
        # what "exited" since the last beat: only after it has been reported running at least once
        for alloc in list(self.local.values()):
            if alloc.reported_running and now - alloc.started_at >= alloc.run_s:
                await self._ship_logs(session, alloc, final=True)
                wall = now - alloc.started_at
                self.unreported[alloc.alloc_id] = {
                    "allocation_id": alloc.alloc_id, "exit_code": 0, "stopped": False,
                    "cpu_seconds": round(wall * self.rng.uniform(0.1, 0.9), 3),
                    "peak_memory_mib": round(self.rng.uniform(20, 400), 1), "wall_s": round(wall, 3), "reason": "",
                }
                del self.local[alloc.alloc_id]
        # every byte of output goes up before the heartbeat (the real agent's order)
        for alloc in list(self.local.values()):
            await self._ship_logs(session, alloc, final=False)
        running = list(self.local)
        finished = list(self.unreported.values())
        body: dict[str, Any] = {"running": running, "finished": finished}
        if self.epoch >= 0:
            body["epoch"] = self.epoch
        sent = time.monotonic()
        answer, ms = await timed_post(session, f"{self.base}/v1/agent/nodes/{self.node_id}/heartbeat",
                                      self.rec.heartbeat, self.headers, body)
        if answer is None:
            return  # the work keeps "running"; the next beat reports it again
        for alloc_id in running:
            alloc = self.local.get(alloc_id)
            if alloc is not None and not alloc.reported_running:
                alloc.reported_running = True
                self.rec.counters.started += 1
        for f in finished:
            if f["stopped"]:
                self.rec.counters.stopped += 1
            elif f["exit_code"] == 0:
                self.rec.counters.finished += 1
        self.unreported.clear()
        if self._reconcile(answer, time.monotonic()):
            self.rec.reconcile.ok(ms, sent)

    def _reconcile(self, answer: dict[str, Any], now: float) -> bool:
        """Make the local state what the answer asks; True when that changed what runs here."""
        epoch = answer.get("epoch", 0)
        if epoch < self.epoch or (answer.get("unchanged") and epoch == self.epoch):
            return False  # older than what this node holds, or the same desired state still
        self.epoch = epoch
        changed = False
        desired = {item["allocation_id"]: item for item in answer.get("run", [])}
        stops = {item["allocation_id"]: item for item in answer.get("stop", [])}
        for alloc_id in desired:
            if alloc_id in self.local or alloc_id in self.unreported:
                continue
            if alloc_id not in self._counted:
                self._counted.add(alloc_id)
                self.rec.counters.assigned += 1
            self.local[alloc_id] = _Local(alloc_id, now, self.rng.uniform(*self.run_s), self.rng.choice((1, 2)))
            changed = True
        for alloc_id in list(self.local):
            if alloc_id in stops or alloc_id not in desired:
                # asked to stop, or no longer desired (fencing): it "exits" on the signal at once
                alloc = self.local.pop(alloc_id)
                self.unreported[alloc_id] = {
                    "allocation_id": alloc_id, "exit_code": 143, "stopped": True, "cpu_seconds": 0.1,
                    "peak_memory_mib": 10.0, "wall_s": round(now - alloc.started_at, 3),
                    "reason": stops.get(alloc_id, {}).get("reason") or "not desired by the server",
                }
                changed = True
        for alloc_id in stops:
            if alloc_id not in self.unreported and alloc_id not in self.local:
                self.unreported[alloc_id] = {"allocation_id": alloc_id, "exit_code": None, "stopped": True,
                                             "reason": "never started on this node"}
        return changed

    async def _ship_logs(self, session: aiohttp.ClientSession, alloc: _Local, final: bool) -> None:
        """The first chunk goes up once the allocation runs, the second (if any) before its exit is reported."""
        want = alloc.chunks if final else 1
        while alloc.shipped < want:
            data = f"[{alloc.alloc_id[:8]}] step {alloc.shipped} loss={self.rng.random():.4f}\n" * 4
            answer, _ = await timed_post(
                session, f"{self.base}/v1/agent/allocations/{alloc.alloc_id}/logs", self.rec.logs, self.headers,
                {"chunks": [{"stream": "stdout", "offset": alloc.offset, "data": data}]},
            )
            if answer is None:
                return  # tried again before the next heartbeat
            alloc.offset += len(data.encode())
            alloc.shipped += 1


async def _sleep_until(at: float, stop_at: float) -> None:
    delay = min(at, stop_at) - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
