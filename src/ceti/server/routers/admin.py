from __future__ import annotations

import time

from fastapi import APIRouter
from sqlalchemy import func, select

from ceti.server import schemas
from ceti.server.deps import AdminDep, PrincipalDep, SessionDep
from ceti.server.errors import BadRequest, Forbidden, NotFound
from ceti.server.services import tokens as svc
from ceti.server.services.reliability import node_reliability
from ceti.spec import AllocationState
from ceti.store import models as m

router = APIRouter(prefix="/v1", tags=["admin"], responses=schemas.responses(*schemas.COMMON_ERRORS))


def _token_out(row: m.Token, secret: str | None = None) -> dict:
    out = {c: getattr(row, c) for c in schemas.TokenOut.model_fields if c != "token"}
    out["token"] = secret
    return out


@router.get("/whoami", response_model=schemas.WhoAmI)
def whoami(who: PrincipalDep):
    return {"kind": who.kind, "project_id": who.project_id, "provider_id": who.provider_id}


@router.post("/projects", status_code=201, response_model=schemas.NamedOut,
             responses=schemas.responses(400, 403, 409))
def create_project(body: schemas.NameIn, s: SessionDep, _: AdminDep):
    row = svc.create_named(s, m.Project, body.name, time.time())
    s.commit()
    return {"id": row.id, "name": row.name, "created_at": row.created_at}


@router.get("/projects", response_model=list[schemas.NamedOut], responses=schemas.responses(403))
def list_projects(s: SessionDep, _: AdminDep):
    return [{"id": r.id, "name": r.name, "created_at": r.created_at} for r in s.scalars(select(m.Project))]


@router.post("/providers", status_code=201, response_model=schemas.NamedOut,
             responses=schemas.responses(400, 403, 409))
def create_provider(body: schemas.NameIn, s: SessionDep, _: AdminDep):
    row = svc.create_named(s, m.Provider, body.name, time.time())
    s.commit()
    return {"id": row.id, "name": row.name, "created_at": row.created_at}


@router.post("/tokens", status_code=201, response_model=schemas.TokenOut, responses=schemas.responses(400, 403))
def create_token(body: schemas.TokenIn, s: SessionDep, _: AdminDep):
    now = time.time()
    project_id = provider_id = None
    if body.kind == "project":
        if not body.project:
            raise BadRequest("a project token needs 'project' (its name)")
        project_id = svc.ensure_project(s, body.project, now).id
    if body.kind == "provider":
        if not body.provider:
            raise BadRequest("a provider token needs 'provider' (its name)")
        provider_id = svc.ensure_provider(s, body.provider, now).id
    row, secret = svc.create_token(s, body.kind, now, body.name, project_id, provider_id)
    s.commit()
    return _token_out(row, secret)


@router.get("/tokens", response_model=list[schemas.TokenOut], responses=schemas.responses(403))
def list_tokens(s: SessionDep, _: AdminDep):
    return [_token_out(r) for r in s.scalars(select(m.Token).order_by(m.Token.created_at))]


@router.delete("/tokens/{token_id}", response_model=schemas.TokenOut, responses=schemas.responses(403, 404))
def revoke_token(token_id: str, s: SessionDep, _: AdminDep):
    row = svc.revoke(s, token_id, time.time())
    s.commit()
    return _token_out(row)


@router.get("/nodes", response_model=list[schemas.NodeOut])
def list_nodes(s: SessionDep, who: PrincipalDep):
    q = select(m.Node).order_by(m.Node.registered_at)
    if who.kind == "provider":
        q = q.where(m.Node.provider_id == who.provider_id)
    counts = dict(
        s.execute(
            select(m.Allocation.node_id, func.count())
            .where(m.Allocation.state.in_([x.value for x in AllocationState if x.active]))
            .group_by(m.Allocation.node_id)
        ).all()
    )
    rows = s.scalars(q).all()
    scores = node_reliability(s, time.time(), node_ids=None if who.kind != "provider" else [n.id for n in rows])
    return [_node_out(n, counts.get(n.id, 0), scores.get(n.id)) for n in rows]


def _node_out(n: m.Node, allocations: int, score) -> dict:
    out = {c: getattr(n, c) for c in schemas.NodeOut.model_fields if c not in _COMPUTED}
    out["allocations"] = allocations
    if score is not None:
        out["reliability"], out["reliability_low"] = score.score, score.low
    return out


_COMPUTED = ("allocations", "reliability", "reliability_low")


@router.get("/nodes/{node_id}", response_model=schemas.NodeOut, responses=schemas.responses(403, 404))
def get_node(node_id: str, s: SessionDep, who: PrincipalDep):
    n = s.get(m.Node, node_id)
    if n is None:
        raise NotFound(f"no node {node_id}")
    if who.kind == "provider" and n.provider_id != who.provider_id:
        raise Forbidden("a provider may see only its own nodes")
    active = s.scalar(
        select(func.count()).select_from(m.Allocation)
        .where(m.Allocation.node_id == n.id, m.Allocation.state.in_([x.value for x in AllocationState if x.active]))
    )
    return _node_out(n, active, node_reliability(s, time.time(), node_ids=[n.id]).get(n.id))


@router.get("/audit", response_model=list[schemas.AuditOut], responses=schemas.responses(403))
def audit_log(s: SessionDep, _: AdminDep, limit: int = 200):
    rows = s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.id.desc()).limit(max(1, min(limit, 5000))))
    return [{c: getattr(r, c) for c in schemas.AuditOut.model_fields} for r in rows]
