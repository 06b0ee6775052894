"""Engine and sessions: SQLite (WAL) by default in a data directory, PostgreSQL when given a URL."""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from ceti.store import fencing  # noqa: F401  (registers the epoch bump on every session flush)

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'ceti.db').resolve()}"


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """`pool_size` must cover every thread that may hold a session at once (request threads plus background
    loops): a thread that waits for a connection while others wait for a thread to release theirs deadlocks."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=0, pool_timeout=10)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        serialize_sqlite_writers(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=10, pool_pre_ping=True)


class WriterQueue:
    """A first-come, first-served lock for the one writer SQLite allows, held by a connection from its
    transaction's first write to its return to the pool.

    Without it, threads that want to write at once wait in SQLite's busy handler, which sleeps and polls with
    growing naps (up to 100 ms each) and serves nobody in order: under a few hundred heartbeats a second some
    requests starve for seconds while the CPU idles. Waiting here instead, a writer is woken the moment the
    previous one is done, in arrival order. Reads never take it (WAL readers do not block). It is owned by a
    connection, not a thread: a request may end its session on another thread than the one that wrote.
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._mutex = threading.Lock()
        self._waiters: deque[tuple[object, threading.Lock]] = deque()
        self._owner: object | None = None

    def acquire(self, owner: object) -> None:
        with self._mutex:
            if self._owner is None:
                self._owner = owner
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((owner, gate))
        if gate.acquire(timeout=self.timeout_s):
            return  # the previous owner made this one the owner before opening the gate
        with self._mutex:
            if self._owner is owner:
                return  # handed over just as the wait ran out
            self._waiters.remove((owner, gate))
        raise sqlite3.OperationalError(f"database is locked: no turn to write within {self.timeout_s:.0f} s")

    def release(self, owner: object) -> None:
        with self._mutex:
            if self._owner is not owner:
                return
            if self._waiters:
                self._owner, gate = self._waiters.popleft()
                gate.release()
            else:
                self._owner = None


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def serialize_sqlite_writers(engine: Engine) -> WriterQueue:
    """Route every write transaction on `engine` through one `WriterQueue` (one process owns a SQLite file:
    the server's single-replica lock guarantees it). pysqlite opens the transaction at the first write
    statement, so that is where the queue is joined; it is left when the connection goes back to the pool,
    after its commit or rollback."""
    queue = WriterQueue()

    @event.listens_for(engine, "before_cursor_execute")
    def _join(conn, _cursor, statement, _params, _context, _executemany):
        pooled = conn.connection
        if pooled.info.get("writing") or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        queue.acquire(pooled.dbapi_connection)
        pooled.info["writing"] = True

    def _leave(dbapi_conn, record) -> None:
        if record is not None and record.info.pop("writing", False):
            queue.release(dbapi_conn)

    @event.listens_for(engine, "reset")
    def _after_rollback(dbapi_conn, record, _state) -> None:
        _leave(dbapi_conn, record)

    @event.listens_for(engine, "invalidate")
    def _dropped(dbapi_conn, record, _exc) -> None:
        _leave(dbapi_conn, record)

    event.listen(engine, "checkin", _leave)
    return queue


MIGRATION_LOCK_KEY = 0x63657469  # "ceti": the advisory lock replicas take around migrations


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # replicas started together on a new database: one migrates, the others wait and then find it done
            # (PostgreSQL's DDL is transactional, and the lock is held until this transaction ends)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
