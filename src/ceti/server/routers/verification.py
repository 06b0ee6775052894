"""Proof of hardware over HTTP: the agent's two answers, and the verdict history of a node."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel

from ceti.server import schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.services import verification as svc

router = APIRouter(tags=["proof of hardware"], responses=schemas.responses(*schemas.COMMON_ERRORS, 403, 404))


class VerdictOut(BaseModel):
    verdict: str
    model_estimate: str | None
    seconds: float | None
    reason: str


class StepOut(BaseModel):
    challenge_id: str
    state: str
    row_request: dict[str, Any] | None = None
    verdict: VerdictOut | None = None


class VerificationOut(BaseModel):
    id: str
    node_id: str
    state: str
    fingerprint: str
    issued_at: float
    roots_at: float | None
    done_at: float | None
    verdict: str | None
    model_estimate: str | None
    seconds: float | None
    reason: str
    evidence: dict[str, Any] | None


Answer = Annotated[dict[str, Any], Body(description="the agent's answer, as `ceti.verify.compute` builds it")]


@router.post("/v1/agent/verifications/{challenge_id}/roots", response_model=StepOut,
             responses=schemas.responses(400, 409))
def post_roots(challenge_id: str, answer: Answer, request: Request, s: SessionDep, who: PrincipalDep):
    """The Merkle roots; the answer names the rows and chunks to reveal (or is already the verdict)."""
    out = svc.accept_roots(s, who, challenge_id, answer, request.app.state.settings, time.time())
    s.commit()
    return out


@router.post("/v1/agent/verifications/{challenge_id}/rows", response_model=StepOut,
             responses=schemas.responses(400, 409))
def post_rows(challenge_id: str, answer: Answer, request: Request, s: SessionDep, who: PrincipalDep):
    """The rows and chunk digests asked for, with their Merkle paths; the answer is the verdict."""
    out = svc.accept_rows(s, who, challenge_id, answer, request.app.state.settings, time.time())
    s.commit()
    return out


@router.get("/v1/nodes/{node_id}/verifications", response_model=list[VerificationOut])
def node_verifications(node_id: str, s: SessionDep, who: PrincipalDep,
                       limit: Annotated[int, Query(ge=1, le=500)] = 20):
    """The node's latest challenges, newest first, with their verdicts and evidence."""
    rows = svc.node_verifications(s, who, node_id, limit)
    return [{f: getattr(r, f) for f in VerificationOut.model_fields} for r in rows]
