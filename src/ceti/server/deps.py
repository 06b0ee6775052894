"""FastAPI dependencies: a database session per request and the caller's principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from ceti.server.errors import Forbidden
from ceti.server.services.tokens import Principal, authenticate, bearer_token


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as s:
        try:
            yield s
            s.commit()
        except Exception:
            s.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    request: Request, s: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    who = authenticate(s, bearer_token(authorization))
    request.state.principal = who  # for the audit trail
    return who


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(who: PrincipalDep) -> Principal:
    if not who.is_admin:
        raise Forbidden("this needs an admin token")
    return who


AdminDep = Annotated[Principal, Depends(require_admin)]
