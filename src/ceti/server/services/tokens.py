"""Bearer tokens: random 256-bit secrets, shown once, stored as SHA-256, scoped by kind."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ceti.server.errors import BadRequest, Conflict, NotFound, Unauthorized
from ceti.store import models as m

KINDS = ("admin", "provider", "project")
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's kind and the project or provider it is bound to."""

    token_id: str
    kind: str
    project_id: str | None = None
    provider_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    return str(uuid.uuid4())


def create_token(
    s: Session, kind: str, now: float, name: str = "", project_id: str | None = None, provider_id: str | None = None
) -> tuple[m.Token, str]:
    if kind not in KINDS:
        raise BadRequest(f"token kind must be one of {', '.join(KINDS)}")
    if kind == "project" and not project_id:
        raise BadRequest("a project token needs a project")
    if kind == "provider" and not provider_id:
        raise BadRequest("a provider token needs a provider")
    secret = f"ceti_{kind}_{secrets.token_urlsafe(32)}"
    row = m.Token(
        id=new_id(),
        kind=kind,
        name=name,
        token_hash=hash_token(secret),
        project_id=project_id if kind == "project" else None,
        provider_id=provider_id if kind == "provider" else None,
        created_at=now,
    )
    s.add(row)
    return row, secret


_BY_HASH = select(m.Token.id, m.Token.kind, m.Token.project_id, m.Token.provider_id, m.Token.revoked_at).where(
    m.Token.token_hash == bindparam("token_hash"))


def bearer_token(authorization: str | None) -> str | None:
    """The secret of an `Authorization: Bearer ...` header, or None."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def authenticate(s: Session, token: str | None) -> Principal:
    if not token:
        raise Unauthorized("missing bearer token")
    # lookup is by the hash of the presented secret, so no secret is ever compared byte by byte
    # one prepared statement on the session's connection, not an ORM query: every request runs this
    row = s.connection().execute(_BY_HASH, {"token_hash": hash_token(token)}).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked token")
    return Principal(row.id, row.kind, row.project_id, row.provider_id)


def revoke(s: Session, token_id: str, now: float) -> m.Token:
    row = s.get(m.Token, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def _named(s: Session, table: type[m.Project | m.Provider], name: str, now: float, must_be_new: bool):
    row = s.scalar(select(table).where(table.name == name))
    if row is not None:
        if must_be_new:
            raise Conflict(f"{table.__tablename__[:-1]} {name!r} already exists")
        return row
    row = table(id=new_id(), name=name, created_at=now)
    s.add(row)
    s.flush()
    return row


def ensure_project(s: Session, name: str, now: float) -> m.Project:
    return _named(s, m.Project, name, now, must_be_new=False)


def ensure_provider(s: Session, name: str, now: float) -> m.Provider:
    return _named(s, m.Provider, name, now, must_be_new=False)


def create_named(s: Session, table: type[m.Project | m.Provider], name: str, now: float):
    return _named(s, table, name, now, must_be_new=True)


def bootstrap_admin(s: Session, now: float) -> str | None:
    """Make the first admin token and the default project on a fresh database; None if done before."""
    ensure_project(s, DEFAULT_PROJECT, now)
    if s.scalar(select(m.Token).where(m.Token.kind == "admin")) is not None:
        return None
    _, secret = create_token(s, "admin", now, name="first admin")
    return secret
