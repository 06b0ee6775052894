"""The scheduling loop: a thread of its own, so a slow round never blocks the request path."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from ceti.fabric.warm import warm_up
from ceti.networks.config import load_network_config
from ceti.server import metrics
from ceti.server.background import yield_to_requests
from ceti.server.background.leader import LeaderElector
from ceti.server.faults import crash_point
from ceti.server.services.backfill import BackfillReport, EstimateCache, backfill_idle_nodes
from ceti.server.services.leader import NotLeader
from ceti.server.services.scheduling import PendingCache, RoundReport, run_round
from ceti.server.settings import Settings

log = logging.getLogger("ceti.server.scheduler")
MIN_GAP_S = 0.2
ROUND_SHARE_GAP = 2.0  # seconds of rest after a round, per second the round took


class SchedulerLoop:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, clock: Callable[[], float] = time.time,
                 sole_replica: bool = False):
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_round_at: float | None = None
        self.last_round_s: float | None = None
        self.last_report: RoundReport | None = None
        self.last_error: str | None = None
        self.rounds = 0  # rounds completed since start
        self._cache = PendingCache(verification=settings.verify.enabled)
        # a broken network configuration stops the server here, at start, with the file's own error
        self.networks = load_network_config(settings.networks_config) if settings.networks_config else {}
        self._estimates = EstimateCache(settings.network_estimate_ttl_s)
        self.last_backfill: BackfillReport | None = None
        self.recent_round_s: deque[float] = deque(maxlen=1024)  # durations of the latest rounds, oldest first
        # one replica at a time runs rounds: the one holding the scheduler lease (docs/replicas.md)
        self.leader = LeaderElector(sessions, settings.leader_lease_s, clock=clock, on_elected=self.poke,
                                    sole_replica=sole_replica)

    def _backfill(self) -> None:
        """Idle nodes get network work before the round, so the round itself places it (or not)."""
        try:
            with self._sessions() as s:
                self.leader.fence(s)
                self.last_backfill = backfill_idle_nodes(s, self.networks, self._clock(), self._estimates)
                s.commit()
        except NotLeader:
            raise
        except Exception:  # back-fill is a bonus: a failure must never stop developer work from scheduling
            log.exception("back-fill failed this round")

    def start(self) -> None:
        self.leader.start()
        self._thread = threading.Thread(target=self._run, name="ceti-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.leader.stop()

    def poke(self) -> None:
        """Run the next round now (a job was submitted), not at the next tick."""
        self._wake.set()

    def run_once(self) -> RoundReport | None:
        """One round if this replica leads (None if not). Its writes commit only under a current term."""
        if self.leader.lead() is None:
            return None
        started = time.perf_counter()
        try:
            if self.networks:
                self._backfill()
            with self._sessions() as s:
                report = run_round(s, self._settings, self._clock(), self._cache, fence=self.leader.fence)
                if report.started:
                    crash_point("round_before_commit")
                s.commit()
        except NotLeader as exc:  # deposed mid-round: the round's writes were rolled back
            self.leader.deposed()
            log.warning("scheduling round discarded: %s", exc)
            return None
        self.last_round_s = time.perf_counter() - started
        metrics.observe_round(self.last_round_s)
        self.last_round_at = self._clock()
        self.recent_round_s.append(self.last_round_s)
        self.rounds += 1
        self.last_report = report
        return report

    def warm(self) -> None:
        """Load the round's compiled kernels (building them where no cache is), so the first round does not
        pay for it: a quarter of a second at 100,000 nodes with a warm cache."""
        try:
            log.info("scheduler kernels ready in %.1f s", warm_up())
        except Exception:  # the first round builds them on first use anyway
            log.exception("warming the scheduler kernels failed")

    def _run(self) -> None:
        yield_to_requests()
        self.warm()
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # the loop must survive a bad round (database restarting, ...)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduling round failed; retrying next tick")
            # a poke (a submit) starts the next round early, but never sooner than a short gap after the last:
            # a burst of submits is scheduled in one round, not one round each; and the gap grows with the
            # round's own length, so rounds take at most a third of one core however often work arrives and
            # the request path keeps the rest
            interval = self._settings.schedule_interval_s
            gap = min(max(MIN_GAP_S, ROUND_SHARE_GAP * (self.last_round_s or 0.0)), interval)
            self._stop.wait(gap)
            self._wake.wait(max(0.0, interval - gap))
            self._wake.clear()
