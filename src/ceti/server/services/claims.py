"""Background work shared between server replicas by claiming rows (docs/replicas.md, "Sharing background work").

A sweep works on a table in two steps, each its own transaction:

1. `claim` picks up to N due rows that nobody holds (or whose holder's claim has expired), writes a random token
   and an expiry into them, and commits. On PostgreSQL the pick is `SELECT ... FOR UPDATE SKIP LOCKED`, so
   replicas claiming at the same moment take different rows instead of queueing behind one another.
2. `still_ours` opens the final write: it locks the claimed rows and keeps those whose token is still this
   claim's, clearing it in the same transaction as the work. A replica that was too slow (its claim expired and
   another replica claimed the row) finds another token there and drops its work: the new holder does it.

A replica that dies between the two steps leaves claims that expire; the rows are then due again and the next
sweep of any replica takes them. So no row is dropped, and because the token is checked under the row lock in the
transaction that does the work, none is worked twice.

SQLite (one replica) ignores FOR UPDATE. The same code stays correct between the threads of its one process: the
claim's UPDATE checks again that the rows are free (it is where SQLite's write lock is taken), and `lock_rows`
takes the write lock before it reads.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

Row = TypeVar("Row")


@dataclass(frozen=True)
class Claim:
    token: str
    keys: tuple[Any, ...]  # the claimed rows' primary keys, ascending
    expires_at: float


def _key(model: type) -> Any:
    (key,) = model.__mapper__.primary_key
    return key


def free(model: type, now: float) -> ColumnElement[bool]:
    """Rows nobody holds: never claimed, released by a final write, or claimed by a replica whose time is up."""
    return or_(model.claim_expires_at.is_(None), model.claim_expires_at <= now)


def claim(s: Session, model: type, due: ColumnElement[bool], now: float, ttl_s: float, limit: int) -> Claim | None:
    """Claim up to `limit` rows of `model` for which `due` holds and that are free, in key order. Commits `s`
    (the claim must be visible to the other replicas before the work starts). None when there is nothing to do.

    `due` may read only `model`'s own columns and subqueries: the lock covers `model`'s rows alone."""
    key = _key(model)
    wanted = and_(due, free(model, now))
    picked = s.scalars(select(key).where(wanted).order_by(key).limit(limit)
                       .with_for_update(skip_locked=True, of=model)).all()
    got: list[Any] = []
    token = secrets.token_hex(16)
    if picked:
        # the condition again: on PostgreSQL these rows are locked by us already and it changes nothing; on SQLite
        # this UPDATE is where the write lock is taken, and another thread may have claimed some rows since
        got = list(s.scalars(
            update(model).where(key.in_(picked), wanted)
            .values(claim_token=token, claim_expires_at=now + ttl_s)
            .returning(key).execution_options(synchronize_session=False)))
    s.commit()
    return Claim(token, tuple(sorted(got)), now + ttl_s) if got else None


def lock_rows(s: Session, model: type[Row], keys: Iterable[Any]) -> list[Row]:
    """Lock rows for the rest of the transaction and read them afresh, in key order (transactions that lock rows
    of one table in the same order cannot deadlock on them). Objects the session loaded earlier are overwritten
    with what is in the database now.

    PostgreSQL: SELECT ... FOR UPDATE. SQLite has no row locks: a no-op UPDATE of the rows takes the database's
    write lock first, which equally keeps every other writer out until this transaction ends."""
    keys = sorted(set(keys))
    if not keys:
        return []
    key = _key(model)
    if s.get_bind().dialect.name == "sqlite":
        column = next(c for c in model.__table__.columns if not c.primary_key)
        s.execute(update(model).where(key.in_(keys)).values({column.key: column})
                  .execution_options(synchronize_session=False))
    return list(s.scalars(select(model).where(key.in_(keys)).order_by(key).with_for_update()
                          .execution_options(populate_existing=True)))


def still_ours(s: Session, model: type[Row], claimed: Claim, keys: Iterable[Any] | None = None) -> list[Row]:
    """Open the final write: lock the claimed rows (all of `claimed`, or `keys` of it) and return those this claim
    still holds, read afresh, with their claim cleared (written at the caller's commit). A row whose token has
    changed was taken over by another replica after this claim expired: it is left alone, and its work dropped."""
    rows = lock_rows(s, model, claimed.keys if keys is None else keys)
    mine = [row for row in rows if row.claim_token == claimed.token]
    for row in mine:
        row.claim_token = None
        row.claim_expires_at = None
    return mine
