"""The sweeper: this replica's share of the background work, lost-node detection and metering.

Every replica runs one, leader or not. The sweeps share their rows by claiming them (services/claims.py), so two
replicas never do the same node or meter and a replica that dies mid-sweep leaves only claims that expire. The
scheduling round, which must see the whole fleet at once, stays with the leader (docs/replicas.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from ceti.server.background import yield_to_requests
from ceti.server.services import ledger, lost_nodes
from ceti.server.settings import Settings

log = logging.getLogger("ceti.server.sweeper")
METER_GAP_MAX_S = 5.0


class Sweeper:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, clock: Callable[[], float] = time.time,
                 on_lost: Callable[[], None] | None = None, before_sweep: Callable[[], object] | None = None):
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._on_lost = on_lost  # work of a lost node is pending again: the scheduler may want to run now
        # writes the heartbeat times this replica holds back (background/heartbeat_clock.py) before a sweep reads them
        self._before_sweep = before_sweep
        # silence only counts from here: nodes are not to blame for heartbeats sent while this replica was down
        self.listening_since = clock()
        self._metered_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost_nodes = 0  # nodes this replica declared lost since it started
        self.last_meter: ledger.MeterReport | None = None
        self.last_error: str | None = None

    @property
    def interval_s(self) -> float:
        return self._settings.sweep_interval_s or self._settings.schedule_interval_s

    def meter_due(self, now: float) -> bool:
        """Metering several times per meter interval is enough (a twelfth of it, at most every 5 s): a pass reads
        every open meter of a project with a budget, and running work is booked once per interval anyway."""
        gap = min(self._settings.ledger.meter_interval_s / 12, METER_GAP_MAX_S)
        if self._metered_at is None or now - self._metered_at >= gap or now < self._metered_at:
            self._metered_at = now
            return True
        return False

    def run_once(self) -> None:
        """One sweep for lost nodes and, when due, one metering pass; each failure is logged and left to the next
        sweep (a claim it held expires and is taken again)."""
        errors = []
        now = self._clock()
        try:
            if self._before_sweep:
                self._before_sweep()
            with self._sessions() as s:
                lost = lost_nodes.sweep(s, self._settings, now, self.listening_since)
            self.lost_nodes += lost
            if lost and self._on_lost:
                self._on_lost()
        except Exception as exc:  # the database may be restarting; PostgreSQL may end a deadlock
            errors.append(f"lost-node sweep: {type(exc).__name__}: {exc}")
            log.exception("lost-node sweep failed; retrying next sweep")
        if self.meter_due(now):
            try:
                with self._sessions() as s:
                    self.last_meter = ledger.meter(s, now, self._settings)
            except Exception as exc:
                errors.append(f"metering: {type(exc).__name__}: {exc}")
                log.exception("metering pass failed; retrying next sweep")
        self.last_error = "; ".join(errors) or None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ceti-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        yield_to_requests()
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)
