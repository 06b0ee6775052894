from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from ceti.server import metrics, schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.faults import crash_point
from ceti.server.services import agents as svc
from ceti.server.services.tokens import Principal
from ceti.store import models as m

router = APIRouter(prefix="/v1/agent", tags=["agent protocol"], responses=schemas.responses(*schemas.COMMON_ERRORS, 403))

# The replies are plain functions of (session, caller, input, app state): the routes below and the fast lane
# (server/fastlane.py), which serves these calls without FastAPI's per-request machinery, share them.


def register_reply(s: Session, who: Principal, body: schemas.RegisterIn, state: Any) -> dict[str, Any]:
    new = body.node_id is None or s.get(m.Node, body.node_id) is None
    node = svc.register(s, who, body.info, body.node_id, time.time())
    s.commit()
    # a new node's desired state is to run nothing: an agent that holds it skips a full first heartbeat, which
    # matters when a whole fleet (re)joins at once
    return {"node_id": node.id, "heartbeat_interval_s": state.settings.heartbeat_interval_s,
            "epoch": node.epoch if new else None}


def unchanged_answer(epoch: int) -> dict[str, Any]:
    """The answer to a quiet heartbeat: the desired state of `epoch` still holds."""
    return {"node_state": "online", "epoch": epoch, "run": [], "stop": [], "verify": None, "unchanged": True}


def heartbeat_reply(s: Session, who: Principal, node_id: str, body: schemas.HeartbeatIn, state: Any) -> dict[str, Any]:
    settings, now = state.settings, time.time()
    if not body.finished and body.epoch is not None:
        clock = getattr(state, "heartbeat_clock", None)  # set while the background work runs
        quiet = svc.quiet_heartbeat(s, who, node_id, body.running, body.epoch, settings, now,
                                    clock.note if clock is not None else None)
        if quiet is not None:
            s.commit()
            metrics.record_heartbeat()
            return unchanged_answer(quiet)
    finished = [svc.Finished(**f.model_dump()) for f in body.finished]
    answer = svc.heartbeat(s, who, node_id, body.running, finished, settings, now)
    s.commit()
    metrics.record_heartbeat()
    if finished:  # capacity came free: place waiting work now, not at the next tick
        state.scheduler.poke()
    return {"node_state": answer.node_state, "epoch": answer.epoch, "run": answer.run, "stop": answer.stop,
            "verify": answer.verify}


def logs_reply(s: Session, who: Principal, allocation_id: str, body: schemas.LogUploadIn, state: Any) -> dict[str, Any]:
    chunks = [(c.stream, c.offset, c.data) for c in body.chunks]
    out = svc.upload_logs(s, who, allocation_id, chunks, state.settings, time.time())
    crash_point("log_upload_before_commit")
    s.commit()
    return out


@router.post("/register", response_model=schemas.RegisterOut, responses=schemas.responses(400))
def register(body: schemas.RegisterIn, request: Request, s: SessionDep, who: PrincipalDep):
    return register_reply(s, who, body, request.app.state)


@router.post("/nodes/{node_id}/heartbeat", response_model=schemas.HeartbeatOut, responses=schemas.responses(400, 404))
def heartbeat(node_id: str, body: schemas.HeartbeatIn, request: Request, s: SessionDep, who: PrincipalDep):
    return heartbeat_reply(s, who, node_id, body, request.app.state)


@router.post("/allocations/{allocation_id}/logs", response_model=schemas.LogUploadOut,
             responses=schemas.responses(400, 404))
def upload_logs(allocation_id: str, body: schemas.LogUploadIn, request: Request, s: SessionDep, who: PrincipalDep):
    return logs_reply(s, who, allocation_id, body, request.app.state)
