"""Orchestration: start a real `ceti server` on 127.0.0.1, drive it with simulated agents and developers from one
asyncio process, and measure latencies, scheduling rounds and the server process's CPU and memory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
import psutil

from ceti.loadgen.agents import Recorder, SimAgent, _sleep_until, node_infos, timed_post
from ceti.loadgen.stats import percentile

HOST = "127.0.0.1"
KNEE_P99_MS = 200.0
KINDS = ("heartbeat", "reconcile", "submit", "logs")
STEADY_AFTER_INTERVALS = 2  # heartbeat intervals: the first spreads the registrations, the second the first beats


@dataclass
class BenchConfig:
    agents: int = 2000
    heartbeat_s: float = 10.0
    submits_per_s: float = 50.0
    duration_s: float = 120.0
    database_url: str | None = None
    port: int | None = None
    run_s: tuple[float, float] = (2.0, 5.0)  # simulated run time of a job
    gpu_job_fraction: float = 0.3
    drain_s: float | None = None  # after the submits stop, agents keep beating this long (default: derived)
    max_connections: int = 64
    max_submits_in_flight: int = 256
    request_timeout_s: float = 30.0
    providers: int = 8
    projects: int = 4
    # proof of hardware: off by default, as simulated agents cannot answer a challenge; on, every node is
    # challenged at first contact and its heartbeats take the full path until the challenge expires
    verify: bool = False
    seed: int = 0
    poisson: bool = True
    # server processes on the one database (PostgreSQL only); agents and submits are spread over them evenly
    replicas: int = 1
    # one more replica (PostgreSQL only) that runs the scheduling rounds and is given no traffic, while the
    # `replicas` that serve the traffic never schedule (`ceti server --no-schedule`)
    scheduler_apart: bool = False

    def drain(self) -> float:
        if self.drain_s is not None:
            return self.drain_s
        # long enough for a job assigned at the last moment to be reported running and then finished
        return min(2 * self.heartbeat_s + self.run_s[1] + 1.0, 30.0)


# -- the server process --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    port: int
    data_dir: Path
    database_url: str | None = None
    proc: subprocess.Popen | None = None
    verify: bool = True
    admin_token: str = ""
    secret_key: str | None = None  # replicas share it: job secrets are encrypted with it
    schedule: bool = True  # False: serves requests only (`--no-schedule`)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout_s: float = 60.0) -> None:
        # defaults for every CETI_ setting (no short node-lost timeout), only the database chosen here
        env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.database_url:
            env["CETI_DATABASE_URL"] = self.database_url
        if not self.verify:
            env["CETI_VERIFY_ENABLED"] = "0"
        if self.secret_key:
            env["CETI_SECRET_KEY"] = self.secret_key
        if not self.schedule:
            env["CETI_SCHEDULE"] = "0"
        cmd = [sys.executable, "-m", "ceti.cli.main", "server", "--host", HOST, "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--admin-token-file", str(self.data_dir / "admin-token"),
               "--log-level", "warning"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"the server did not become healthy in {timeout_s}s: {self.log_tail()}")
        token_file = self.data_dir / "admin-token"
        if token_file.exists():  # only the replica that made the database writes it
            self.admin_token = token_file.read_text().strip()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class ProcessSampler:
    """CPU seconds and peak RSS of a process, sampled (the peak is the largest RSS seen)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.cpu0 = self._cpu()
        self.cpu_s = 0.0
        self.peak_rss = 0

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.cpu_s = self._cpu() - self.cpu0
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)


# -- setup through the admin API -----------------------------------------------------------------------


def make_tokens(url: str, admin_token: str, kind: str, names: list[str]) -> list[str]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as c:
        for name in names:
            body = {"kind": kind, "name": name, kind: name}
            r = c.post("/v1/tokens", json=body)
            r.raise_for_status()
            out.append(r.json()["token"])
    return out


def job_spec(i: int, rng: random.Random, gpu_fraction: float) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": f"lg-{i}", "command": ["python3", "-c", "print('hello')"],
                            "resources": {"cpus": rng.choice((0.5, 1, 2)), "memory": rng.choice(("256Mi", "1Gi", "2Gi"))}}
    if rng.random() < gpu_fraction:
        spec["resources"]["gpus"] = 1
    return spec


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Live:
    """What the progress display reads while a run goes on."""

    rec: Recorder
    phase: str = "starting"
    started_at: float = 0.0
    total_s: float = 0.0
    submitted: int = 0


async def developer(session: aiohttp.ClientSession, bases: list[str], tokens: list[str], cfg: BenchConfig,
                    rec: Recorder, stop_at: float, live: Live) -> dict[str, int]:
    """Submit jobs at `submits_per_s` (Poisson arrivals, or fixed rate) until `stop_at`; at most
    `max_submits_in_flight` at once (a later arrival waits for a slot and counts as late)."""
    rng = random.Random(cfg.seed + 7)
    sem = asyncio.Semaphore(cfg.max_submits_in_flight)
    tasks: set[asyncio.Task] = set()
    late = 0

    async def one(i: int) -> None:
        try:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}", "Idempotency-Key": str(uuid.uuid4())}
            answer, _ = await timed_post(session, f"{bases[i % len(bases)]}/v1/jobs", rec.submit, headers,
                                         job_spec(i, rng, cfg.gpu_job_fraction))
            if answer is not None:
                live.submitted += 1
        finally:
            sem.release()

    if cfg.submits_per_s <= 0:
        return {"late": 0}
    next_at = time.monotonic()
    limit = int(cfg.submits_per_s * cfg.duration_s * 3) + 10  # bounded whatever the clock does
    for i in range(limit):
        next_at += rng.expovariate(cfg.submits_per_s) if cfg.poisson else 1.0 / cfg.submits_per_s
        if next_at >= stop_at or time.monotonic() >= stop_at:
            break
        await _sleep_until(next_at, stop_at)
        try:  # a slow server holds the slots: wait for one, never past the end of the load
            await asyncio.wait_for(sem.acquire(), timeout=max(stop_at - time.monotonic(), 0.001))
        except TimeoutError:
            break
        if time.monotonic() - next_at > 0.1:
            late += 1
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=cfg.request_timeout_s + 5)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return {"late": late}


async def sample_server(servers: list[ServerProcess], session: aiohttp.ClientSession, samplers: list[ProcessSampler],
                        me: ProcessSampler, rounds: list[float], stop: asyncio.Event, state: dict[str, Any]) -> None:
    """Every second: the server processes' CPU and RSS, and the new scheduling rounds (GET /v1/scheduler) of
    whichever replica leads (only the leader runs rounds)."""
    headers = {"Authorization": f"Bearer {servers[0].admin_token}"}
    seen: dict[int, int] = {}
    while not stop.is_set():
        for sampler in samplers:
            sampler.sample()
        me.sample()
        for i, server in enumerate(servers):
            try:
                async with session.get(f"{server.url}/v1/scheduler", headers=headers) as r:
                    status = r.status
                    payload = await r.read()
            except (aiohttp.ClientError, TimeoutError):
                continue
            if status == 404:
                state["scheduler_endpoint"] = False
            if status != 200:
                continue
            body = json.loads(payload)
            n, recent = body["rounds"], body["recent_round_s"]
            if i not in seen:
                new = recent  # the rounds before the load started count too (few)
            else:
                new = recent[len(recent) - min(n - seen[i], len(recent)):] if n > seen[i] else []
                if n - seen[i] > len(recent):
                    state["rounds_missed"] = state.get("rounds_missed", 0) + (n - seen[i] - len(recent))
            rounds.extend(new)
            seen[i] = n
        state["rounds"] = sum(seen.values())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
    for sampler in samplers:
        sampler.sample()
    me.sample()


async def drive(cfg: BenchConfig, servers: list[ServerProcess], provider_tokens: list[str],
                project_tokens: list[str], live: Live) -> dict[str, Any]:
    rec = live.rec
    # a scheduler apart (the first server) is sampled and asked for its rounds, but gets no requests
    traffic = servers[1:] if cfg.scheduler_apart else servers
    infos = node_infos(cfg.agents, cfg.seed)
    samplers, me = [ProcessSampler(sv.proc.pid) for sv in servers], ProcessSampler(os.getpid())
    rounds: list[float] = []
    sched_state: dict[str, Any] = {}
    rng = random.Random(cfg.seed)
    # aiohttp, not httpx: httpx's pool walks every connection on each request, which cost the generator 4-5 ms
    # of CPU per request and starved the server it measures on a small host. The connector's limit bounds the
    # requests in flight and queues the rest (that wait counts in the latency). Simulated agents carry no
    # cookies, so the jar's per-request work is skipped. The sampler has connections of its own: a saturated
    # pool must not delay or drop its samples.
    connector = aiohttp.TCPConnector(limit=cfg.max_connections, limit_per_host=cfg.max_connections)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s)) as session, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                  cookie_jar=aiohttp.DummyCookieJar()) as side:
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        live.started_at, live.total_s, live.phase = t0, cfg.duration_s + cfg.drain(), "load"
        submits_end = t0 + cfg.duration_s
        agents_end = submits_end + cfg.drain()
        stop_sampling = asyncio.Event()
        sampler_task = asyncio.create_task(
            sample_server(servers, side, samplers, me, rounds, stop_sampling, sched_state))
        agents = [SimAgent(i, info, provider_tokens[i % len(provider_tokens)], traffic[i % len(traffic)].url,
                           cfg.heartbeat_s, cfg.run_s, rec, cfg.seed, cfg.request_timeout_s)
                  for i, info in enumerate(infos)]
        # registration (and so every heartbeat) is spread over the first interval, not all at once
        agent_tasks = [asyncio.create_task(a.run(session, t0 + rng.uniform(0, cfg.heartbeat_s), agents_end))
                       for a in agents]
        dev = await developer(session, [sv.url for sv in traffic], project_tokens, cfg, rec, submits_end, live)
        live.phase = "drain"
        # a request still in flight at the end gets one request timeout more, then is cancelled (an error)
        done, pending = await asyncio.wait(agent_tasks, timeout=max(agents_end - time.monotonic(), 0)
                                           + cfg.request_timeout_s + 5)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        crashed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        wall = time.monotonic() - t0
        stop_sampling.set()
        await sampler_task
    if crashed:
        raise RuntimeError(f"{len(crashed)} simulated agent(s) crashed; the first: {crashed[0]!r}")
    summaries = {k: getattr(rec, k).summary() for k in (*KINDS, "register")}
    # the fleet joins over the first heartbeat interval (registrations, first heartbeats): the steady state is
    # what is sent from the end of the second interval on, when every agent has registered and heartbeated
    steady_from = STEADY_AFTER_INTERVALS * cfg.heartbeat_s
    steady = {k: getattr(rec, k).since(t0 + steady_from).summary() for k in KINDS}
    ms = [r * 1000 for r in rounds]
    c = rec.counters
    return {
        **summaries,
        "errors": sum(getattr(rec, k).errors for k in (*KINDS, "register")),
        "steady": {"from_s": steady_from, **steady},
        "schedule_round": {
            "count": sched_state.get("rounds", len(ms)),
            "p50_ms": _r(percentile(ms, 50)), "p99_ms": _r(percentile(ms, 99)), "max_ms": _r(max(ms) if ms else None),
            **({"unavailable": "GET /v1/scheduler is missing"} if sched_state.get("scheduler_endpoint") is False
               else {}),
        },
        # several replicas: CPU summed over them, peak RSS of the largest
        "server": {"cpu_s": round(sum(sm.cpu_s for sm in samplers), 2),
                   "peak_rss_mib": round(max(sm.peak_rss for sm in samplers) / 2**20, 1),
                   "cpu_util": round(sum(sm.cpu_s for sm in samplers) / wall, 3) if wall else None,
                   "replicas": len(servers), "scheduler_apart": cfg.scheduler_apart},
        "loadgen": {"cpu_s": round(me.cpu_s, 2), "peak_rss_mib": round(me.peak_rss / 2**20, 1),
                    "cpu_util": round(me.cpu_s / wall, 3) if wall else None, "late_submits": dev["late"]},
        # the server and the load generator share this host: other work on it skews every figure
        "host": {"cpus": os.cpu_count(), "load_avg_1m_start": round(load_before, 2),
                 "load_avg_1m_end": round(os.getloadavg()[0], 2)},
        "jobs": {"submitted": live.submitted, "assigned": c.assigned, "started": c.started,
                 "finished": c.finished, "stopped": c.stopped},
        "agents": cfg.agents,
        "registered": c.registered,
        "database": "postgresql" if cfg.database_url else "sqlite",
        "config": {"agents": cfg.agents, "heartbeat_s": cfg.heartbeat_s, "submits_per_s": cfg.submits_per_s,
                   "duration_s": cfg.duration_s, "drain_s": cfg.drain(), "max_connections": cfg.max_connections,
                   "verify": cfg.verify, "replicas": cfg.replicas, "scheduler_apart": cfg.scheduler_apart},
        "wall_s": round(wall, 1),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


class UsedDatabase(ValueError):
    """The bench was pointed at a database that already holds a fabric."""


def run_bench(cfg: BenchConfig, on_start: Callable[[Live], None] | None = None) -> dict[str, Any]:
    """One run, start to end: fresh server processes (each its own temp data dir), the load, the figures.
    Bounded in time."""
    if cfg.replicas > 1 and not cfg.database_url:
        raise ValueError("several replicas need PostgreSQL (--database-url): SQLite serves one server")
    if cfg.scheduler_apart and not cfg.database_url:
        raise ValueError("a scheduler apart needs PostgreSQL (--database-url): SQLite serves one server")
    root = Path(tempfile.mkdtemp(prefix="ceti-bench-cp-"))
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # a Fernet key, as the server expects
    servers = []
    # whether each server schedules: the scheduler apart starts first, so it makes the schema and the admin token
    # and takes the lease at once; the replicas that serve the traffic then do not schedule
    schedules = [True] * cfg.scheduler_apart + [not cfg.scheduler_apart] * max(cfg.replicas, 1)
    for i, schedule in enumerate(schedules):
        (root / f"r{i}").mkdir()
        port = cfg.port + i if cfg.port else free_port()
        servers.append(ServerProcess(port, root / f"r{i}", cfg.database_url, verify=cfg.verify, secret_key=key,
                                     schedule=schedule))
    live = Live(Recorder())
    try:
        for server in servers:  # one after another: the first makes the schema and the admin token
            server.start()
        admin = servers[0]
        if not admin.admin_token:
            raise UsedDatabase(
                "--database-url must name an empty database: this one already holds a fabric (it has an admin "
                f"token), and the bench would add {cfg.agents} nodes and their jobs to it; create a fresh one"
            )
        provider_tokens = make_tokens(admin.url, admin.admin_token, "provider",
                                      [f"lg-provider-{i}" for i in range(max(cfg.providers, 1))])
        project_tokens = make_tokens(admin.url, admin.admin_token, "project",
                                     [f"lg-project-{i}" for i in range(max(cfg.projects, 1))])
        for server in servers[1:]:
            server.admin_token = admin.admin_token
        if on_start:
            on_start(live)
        budget = cfg.duration_s + cfg.drain() + cfg.request_timeout_s * 3 + 60
        result = asyncio.run(asyncio.wait_for(drive(cfg, servers, provider_tokens, project_tokens, live), budget))
        for server in servers:
            if server.proc.poll() is not None:
                raise RuntimeError(f"a server died during the run: {server.log_tail()}")
        return result
    finally:
        live.phase = "done"
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def within(result: dict[str, Any], p99_ms: float = KNEE_P99_MS) -> bool:
    """Every request kind kept p99 under the bar, and nothing failed."""
    if result["errors"]:
        return False
    return all(result[k]["p99_ms"] is None or result[k]["p99_ms"] < p99_ms for k in KINDS)


# -- PostgreSQL: a fresh database per knee step -----------------------------------------------------------


def fresh_database(url: str, name: str) -> str:
    """Create database `name` on the server `url` points at and return its URL (for a knee step)."""
    import psycopg

    with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def drop_database(url: str, name: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_conninfo(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


@dataclass
class KneeResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    knee: int | None = None


def find_knee(cfg: BenchConfig, counts: list[int], step_duration_s: float,
              on_step: Callable[[int, dict[str, Any]], None] | None = None,
              on_start: Callable[[Live], None] | None = None) -> KneeResult:
    """Run each agent count (fresh server and database each) and find the largest that stays within the bar.
    Stops after the first step that fails it (larger counts only get worse)."""
    out = KneeResult()
    for n in sorted(counts):
        step = BenchConfig(**{**cfg.__dict__, "agents": n, "duration_s": step_duration_s})
        db_name = None
        if cfg.database_url:
            db_name = f"ceti_knee_{os.getpid()}_{n}"
            step.database_url = fresh_database(cfg.database_url, db_name)
        try:
            result = run_bench(step, on_start)
        finally:
            if db_name:
                drop_database(cfg.database_url, db_name)
        result["within_bar"] = within(result)
        out.steps.append(result)
        if on_step:
            on_step(n, result)
        if not result["within_bar"]:
            break
        out.knee = n
    return out
