from __future__ import annotations

import time

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ceti.server import schemas
from ceti.server.deps import PrincipalDep, SessionDep
from ceti.server.services import secrets as svc
from ceti.server.services.jobs import project_for_submit

router = APIRouter(prefix="/v1/secrets", tags=["secrets"], responses=schemas.responses(*schemas.COMMON_ERRORS, 403))
NAME = Path(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(..., min_length=1, max_length=svc.MAX_SECRET_BYTES)


class SecretOut(BaseModel):
    name: str
    created_at: float
    updated_at: float


@router.put("/{name}", response_model=SecretOut, responses=schemas.responses(400))
def put_secret(body: SecretIn, request: Request, s: SessionDep, who: PrincipalDep, name: str = NAME):
    now = time.time()
    project_id = project_for_submit(s, who, now)
    row = svc.put(s, request.app.state.settings.secret_box(), project_id, name, body.value, now)
    s.commit()
    return {"name": row.name, "created_at": row.created_at, "updated_at": row.updated_at}


@router.get("", response_model=list[SecretOut])
def list_secrets(s: SessionDep, who: PrincipalDep):
    project_id = project_for_submit(s, who, time.time())
    return [{"name": r.name, "created_at": r.created_at, "updated_at": r.updated_at} for r in svc.names(s, project_id)]


@router.delete("/{name}", status_code=204, responses=schemas.responses(404))
def delete_secret(s: SessionDep, who: PrincipalDep, name: str = NAME):
    svc.delete(s, project_for_submit(s, who, time.time()), name)
    s.commit()
    return Response(status_code=204)
