"""Leader leases: which replica runs a role (the scheduling round), in which term, until when.

Two operations carry the design (docs/replicas.md):

- `acquire` is one conditional UPDATE. The holder renews its lease; any other replica takes it only once it has
  expired, and a takeover increments the term.
- `check_term` is the fence. A transaction that writes as leader first locks the lease row and refuses a term that
  is no longer current or a lease that has expired. A takeover must update that same row, so it waits for a
  leader's transaction in flight to commit, and every later transaction of the old term sees the new term and
  aborts: a deposed leader can never commit.

Times are the replicas' clocks in UNIX seconds, like every time in the store. Skew between replicas can make a
takeover early or late; it cannot let two terms commit interleaved, because the fence compares terms, not clocks.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import case, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ceti.store import models as m

SCHEDULER = "scheduler"  # the lease of the scheduling loop (the round, back-fill, lost-node detection)
_t = m.LeaderLease.__table__


class NotLeader(Exception):
    """This replica's term is no longer current, or its lease has expired: what it was writing is discarded."""


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str | None
    term: int
    expires_at: float


def new_replica_id() -> str:
    """Unique per process start: a restarted replica is a new holder and takes over with a new term."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(s: Session, name: str, holder: str, now: float, lease_s: float, sole: bool = False) -> int | None:
    """Renew `holder`'s lease, or take it over if it has expired. Returns the term now held, or None.

    The holder keeps its term on renewal even after its lease lapsed, as long as no one took over in between:
    no other replica led meanwhile, so nothing it wrote can conflict. `sole` (a replica that knows it is the only
    one, as on SQLite behind its file lock) takes over at once: a previous holder can only be a dead process.
    The caller commits.
    """
    free = true() if sole else or_(_t.c.holder == holder, _t.c.holder.is_(None), _t.c.expires_at <= now)
    stmt = (
        update(_t)
        .where(_t.c.name == name, free)
        .values(holder=holder, term=case((_t.c.holder == holder, _t.c.term), else_=_t.c.term + 1),
                expires_at=now + lease_s)
        .returning(_t.c.term)
    )
    term = s.execute(stmt).scalar_one_or_none()
    if term is not None:
        return term
    if s.execute(select(_t.c.name).where(_t.c.name == name)).first() is not None:
        return None  # someone else holds a live lease
    try:  # a role without a row yet (the migration makes the scheduler's): the first replica creates it
        with s.begin_nested():
            s.execute(insert(_t).values(name=name, holder=holder, term=1, expires_at=now + lease_s))
    except IntegrityError:
        return None  # another replica created it first
    return 1


def release(s: Session, name: str, holder: str, term: int, now: float) -> bool:
    """Give the lease up (on shutdown) so another replica takes over at once, not when it expires."""
    result = s.execute(update(_t).where(_t.c.name == name, _t.c.holder == holder, _t.c.term == term)
                       .values(expires_at=now))
    return result.rowcount == 1


def check_term(s: Session, name: str, holder: str, term: int, now: float) -> None:
    """The fence: lock the lease row in this transaction and raise NotLeader unless `holder` still leads in
    `term` with an unexpired lease. Call it before the transaction's writes; the lock lasts until its commit.

    PostgreSQL locks the row (SELECT ... FOR UPDATE). SQLite has no row locks: a no-op write takes the database's
    write lock instead, which equally keeps a takeover out until this transaction ends.
    """
    if s.get_bind().dialect.name == "sqlite":
        s.execute(update(_t).where(_t.c.name == name).values(term=_t.c.term))
    row = s.execute(
        select(_t.c.holder, _t.c.term, _t.c.expires_at).where(_t.c.name == name).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotLeader(f"no lease named {name!r}")
    if row.holder != holder or row.term != term:
        raise NotLeader(f"term {term} is over: {name} is led by {row.holder} in term {row.term}")
    if row.expires_at <= now:
        raise NotLeader(f"the lease of term {term} expired {now - row.expires_at:.1f}s ago")


def current(s: Session, name: str = SCHEDULER) -> Lease | None:
    row = s.execute(select(_t.c.holder, _t.c.term, _t.c.expires_at).where(_t.c.name == name)).one_or_none()
    return Lease(name, row.holder, row.term, row.expires_at) if row is not None else None
