from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ceti.server import metrics, schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.faults import crash_point
from ceti.server.services import agents as svc

router = APIRouter(prefix="/v1/agent", tags=["agent protocol"], responses=schemas.responses(*schemas.COMMON_ERRORS, 403))


@router.post("/register", response_model=schemas.RegisterOut, responses=schemas.responses(400))
def register(body: schemas.RegisterIn, request: Request, s: SessionDep, who: PrincipalDep):
    node = svc.register(s, who, body.info, body.node_id, time.time())
    s.commit()
    return {"node_id": node.id, "heartbeat_interval_s": request.app.state.settings.heartbeat_interval_s}


@router.post("/nodes/{node_id}/heartbeat", response_model=schemas.HeartbeatOut, responses=schemas.responses(400, 404))
def heartbeat(node_id: str, body: schemas.HeartbeatIn, request: Request, s: SessionDep, who: PrincipalDep):
    settings, now = request.app.state.settings, time.time()
    if not body.finished and body.epoch is not None:
        quiet = svc.quiet_heartbeat(s, who, node_id, body.running, body.epoch, settings, now)
        if quiet is not None:
            s.commit()
            metrics.record_heartbeat()
            return {"node_state": "online", "epoch": quiet, "run": [], "stop": [], "verify": None,
                    "unchanged": True}
    finished = [svc.Finished(**f.model_dump()) for f in body.finished]
    answer = svc.heartbeat(s, who, node_id, body.running, finished, settings, now)
    s.commit()
    metrics.record_heartbeat()
    if finished:  # capacity came free: place waiting work now, not at the next tick
        request.app.state.scheduler.poke()
    return {"node_state": answer.node_state, "epoch": answer.epoch, "run": answer.run, "stop": answer.stop,
            "verify": answer.verify}


@router.post("/allocations/{allocation_id}/logs", response_model=schemas.LogUploadOut,
             responses=schemas.responses(400, 404))
def upload_logs(allocation_id: str, body: schemas.LogUploadIn, request: Request, s: SessionDep, who: PrincipalDep):
    chunks = [(c.stream, c.offset, c.data) for c in body.chunks]
    out = svc.upload_logs(s, who, allocation_id, chunks, request.app.state.settings, time.time())
    crash_point("log_upload_before_commit")
    s.commit()
    return out
