"""The FastAPI application: settings, database, first admin token, routers, the scheduling loop and the sweeper."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ceti import __version__
from ceti.fabric.per_task import check_placement
from ceti.logs import RequestIds
from ceti.networks.config import load_akash_market
from ceti.server import fastlane, metrics, middleware, schemas
from ceti.server.background.heartbeat_clock import HeartbeatClock
from ceti.server.background.scheduler_loop import SchedulerLoop
from ceti.server.background.sweeper import Sweeper
from ceti.server.errors import install_error_handlers
from ceti.server.routers import admin, agent, akash, dashboard, jobs, ledger, scheduler, secrets, verification
from ceti.server.services.tokens import bootstrap_admin
from ceti.server.settings import Settings
from ceti.store.db import make_engine, migrate, session_factory

log = logging.getLogger("ceti.server")


class SingleReplicaLock:
    """SQLite serves one replica: a second server on the same data directory refuses to start."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"another ceti server already uses {self.path.parent} (SQLite allows one replica; "
                "use PostgreSQL for several)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def create_app(settings: Settings | None = None, admin_token_file: Path | None = None,
               run_scheduler: bool = True) -> FastAPI:
    settings = settings or Settings()
    if not settings.schedule and settings.is_sqlite:
        raise ValueError("--no-schedule needs PostgreSQL (--database-url): on SQLite the one server must schedule")
    try:
        check_placement(settings.placement)
    except ValueError as exc:
        raise ValueError(f"CETI_PLACEMENT: {exc}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        lock = SingleReplicaLock(settings.data_dir) if settings.is_sqlite else None
        if lock:
            lock.acquire()
        # fewer request threads than pooled connections: no thread can wait forever for a connection
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        engine = make_engine(settings.url, pool_size=settings.request_threads + 8)
        migrate(engine)
        sessions = session_factory(engine)
        with sessions() as s:
            secret = bootstrap_admin(s, time.time())
            s.commit()
        if secret:
            announce_admin_token(secret, admin_token_file)
        app.state.engine, app.state.sessions = engine, sessions
        loop = SchedulerLoop(sessions, settings, sole_replica=lock is not None)  # SQLite: the only replica
        app.state.scheduler = loop
        # the provider side of the Akash market, when the operator configured it (services/akash_market.py)
        app.state.akash_market = load_akash_market(settings.networks_config) if settings.networks_config else None
        # every replica, leader or not, sweeps for lost nodes and meters (claiming rows, services/claims.py)
        clock = HeartbeatClock(sessions, settings.heartbeat_flush_s)
        sweeper = Sweeper(sessions, settings, on_lost=loop.poke, before_sweep=clock.flush)
        app.state.sweeper = sweeper
        if run_scheduler:
            app.state.heartbeat_clock = clock  # quiet heartbeats' times go out in batches
            app.state.quiet_reader = fastlane.QuietReader(engine, settings, clock)
            clock.start()
            if settings.schedule:
                loop.start()
            sweeper.start()
        try:
            yield
        finally:
            sweeper.stop()
            loop.stop()
            clock.stop()
            if run_scheduler:
                await app.state.quiet_reader.aclose()
            engine.dispose()
            if lock:
                lock.release()

    app = FastAPI(title="ceτi Compute Fabric", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)

    app.add_middleware(RequestIds)  # log records of a request carry the job/node/allocation id of its path
    app.add_middleware(middleware.RequestGuards, max_body_bytes=settings.max_body_bytes,
                       rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst,
                       max_proof_body_bytes=settings.max_proof_body_bytes)

    @app.get("/healthz", response_model=schemas.HealthOut, tags=["health"], responses={
        503: {"model": schemas.HealthOut, "description": "the database cannot be reached"},
        **schemas.responses(413, 429),
    })
    def health(request: Request):
        try:
            with request.app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            db = "ok"
        except Exception as exc:  # noqa: BLE001 -- report, do not crash: the database may be restarting
            db = f"unavailable: {type(exc).__name__}"
        body = {"status": "ok" if db == "ok" else "unhealthy", "database": db,
                "scheduler_last_round_at": request.app.state.scheduler.last_round_at}
        return JSONResponse(body, status_code=200 if db == "ok" else 503)

    app.include_router(jobs.router)
    app.include_router(agent.router)
    app.include_router(admin.router)
    app.include_router(secrets.router)
    app.include_router(scheduler.router)
    app.include_router(verification.router)
    app.include_router(ledger.router)
    app.include_router(akash.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard.pages)
    app.include_router(metrics.router)
    fastlane.install(app)  # the hot calls, in front of their FastAPI routes
    return app


def announce_admin_token(secret: str, token_file: Path | None) -> None:
    if token_file is not None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        log.warning("first admin token written to %s", token_file)
    else:
        print(f"First admin token (shown once, store it now): {secret}", flush=True)
