"""The heartbeat clock: quiet heartbeats' times, written in batches instead of one write transaction each.

A quiet heartbeat (services/agents.py, `quiet_heartbeat`) changes nothing but its node's `last_heartbeat_at`. At
thousands of agents those one-row writes were most of the write transactions, and on SQLite each took the one
write lock in turn. Here they are noted in memory and written together, one UPDATE per node in one transaction,
every `CETI_HEARTBEAT_FLUSH_S` (0.5 s) and before each lost-node sweep of this replica, so a sweep never reads a
time older than the heartbeats this replica has answered. A time is only ever moved forward, and only on a node
still online: a node declared lost meanwhile is brought back by its next heartbeat, which takes the full path.

What a crash loses is at most one flush interval of times, far inside the lost-node timeout (30 s by default).
Another replica's sweep may read a time up to one interval old, which moves a declaration by as much.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session, sessionmaker

from ceti.store import models as m

log = logging.getLogger("ceti.server.heartbeat_clock")

_ADVANCE = (
    update(m.Node)
    .where(m.Node.id == bindparam("node_id"), m.Node.state == "online", m.Node.last_heartbeat_at < bindparam("at"))
    .values(last_heartbeat_at=bindparam("at"))
    .execution_options(synchronize_session=False)
)


class HeartbeatClock:
    def __init__(self, sessions: sessionmaker[Session], interval_s: float = 0.5):
        self._sessions = sessions
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's and a sweep's
        self._pending: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed = 0  # node times written since start
        self.last_error: str | None = None

    def note(self, node_id: str, at: float) -> None:
        with self._lock:
            if at > self._pending.get(node_id, float("-inf")):
                self._pending[node_id] = at

    def flush(self) -> int:
        """Write every noted time; on failure they are kept for the next flush (a newer note wins)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            rows = [{"node_id": node_id, "at": at} for node_id, at in sorted(batch.items())]
            try:
                with self._sessions() as s:
                    s.connection().execute(_ADVANCE, rows)
                    s.commit()
            except Exception as exc:  # noqa: BLE001 -- the database may be restarting: keep the times, retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not write %d heartbeat times: %s", len(rows), self.last_error)
                with self._lock:
                    for node_id, at in batch.items():
                        if at > self._pending.get(node_id, float("-inf")):
                            self._pending[node_id] = at
                return 0
            self.last_error = None
            self.flushed += len(rows)
            return len(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ceti-heartbeat-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
