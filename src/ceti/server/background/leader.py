"""Leader election for the scheduling loop: a lease in the database, renewed from a thread of its own.

The renewal runs beside the loop, not inside it, so a long round does not let the lease lapse and hand the
scheduler to another replica each time. What this replica believes about its leadership only decides whether
it starts a round; the database decides whether the round commits (`fence`, services/leader.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ceti.server.services.leader import SCHEDULER, NotLeader, acquire, check_term, new_replica_id, release

log = logging.getLogger("ceti.server.leader")


class LeaderElector:
    """Keeps this replica's claim on one lease: renews it while held, takes it over once it expires.

    A follower tries every `lease_s / 4`, so after a leader dies another takes over within about 1.25 lease
    periods (plus one round). `on_elected` runs when this replica starts a new term (the loop runs a round at
    once). A `sole_replica` (SQLite, whose file lock keeps a second server out) takes the lease at once, so a
    server restarted after a crash does not wait for its dead predecessor's lease to run out.
    """

    def __init__(self, sessions: sessionmaker[Session], lease_s: float, name: str = SCHEDULER,
                 clock: Callable[[], float] = time.time, on_elected: Callable[[], None] | None = None,
                 replica_id: str | None = None, sole_replica: bool = False):
        if lease_s <= 0:
            raise ValueError("the leader lease must be positive")
        self._sessions = sessions
        self.lease_s = lease_s
        self.renew_every_s = lease_s / 4
        self.name = name
        self.replica_id = replica_id or new_replica_id()
        self._clock = clock
        self._on_elected = on_elected
        self.sole_replica = sole_replica  # the only replica (SQLite): a lease left by a killed process is void
        self._lock = threading.Lock()
        self._term: int | None = None
        self._valid_until = 0.0  # monotonic; the lease as this replica last renewed it
        self._last_try = float("-inf")  # monotonic
        self.last_term: int | None = None  # the latest term this replica led in (kept after it loses it)
        self.lease_expires_at: float | None = None  # wall clock, as written to the database
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the loop asks --------------------------------------------------------------------------

    def term(self) -> int | None:
        """The term this replica leads in now, or None. Only a hint: the fence is the authority."""
        with self._lock:
            if self._term is not None and time.monotonic() < self._valid_until:
                return self._term
            return None

    def lead(self) -> int | None:
        """`term()`, renewing first when a renewal is due (the thread normally keeps it fresh; without the
        thread, as in tests that drive the loop by hand, this call does the renewing)."""
        with self._lock:
            due = time.monotonic() - self._last_try >= self.renew_every_s
        if due:
            self.try_acquire()
        return self.term()

    def fence(self, s: Session) -> None:
        """Lock and check the lease inside `s`'s transaction; raises NotLeader when this replica's term is over."""
        term = self.term()
        if term is None:
            raise NotLeader("this replica does not lead")
        if self.sole_replica:
            # SQLite: the data directory's file lock already keeps every other server out, and a write here would
            # hold the database's only write lock through the whole round, stalling every heartbeat behind it
            return
        check_term(s, self.name, self.replica_id, term, self._clock())

    def deposed(self) -> None:
        """A fence refused this replica: stop believing it leads and ask the database again next time."""
        with self._lock:
            self._term = None
            self._last_try = float("-inf")

    # -- renewing --------------------------------------------------------------------------------------

    def try_acquire(self) -> int | None:
        started, now = time.monotonic(), self._clock()
        try:
            with self._sessions() as s:
                term = acquire(s, self.name, self.replica_id, now, self.lease_s, self.sole_replica)
                s.commit()
        except SQLAlchemyError as exc:  # the database may be restarting: keep the belief until the lease runs out
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("could not renew the %s lease: %s", self.name, self.last_error)
            with self._lock:
                self._last_try = started
            return self.term()
        self.last_error = None
        with self._lock:
            previous = self._term if time.monotonic() < self._valid_until else None
            self._last_try = started
            self._term = term
            if term is not None:
                self._valid_until = started + self.lease_s
                self.lease_expires_at = now + self.lease_s
                self.last_term = term
        if term is not None and term != previous:
            log.warning("replica %s leads %s in term %d", self.replica_id, self.name, term)
            if self._on_elected:
                self._on_elected()
        elif term is None and previous is not None:
            log.warning("replica %s no longer leads %s (was term %d)", self.replica_id, self.name, previous)
        return term

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ceti-lease-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and hand the lease back, so another replica takes over now rather than at expiry."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            term, self._term = self._term, None
        if term is None:
            return
        try:
            with self._sessions() as s:
                release(s, self.name, self.replica_id, term, self._clock())
                s.commit()
        except SQLAlchemyError:  # it expires on its own
            log.warning("could not release the %s lease; it expires in %.0fs", self.name, self.lease_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire()
            self._stop.wait(self.renew_every_s)
