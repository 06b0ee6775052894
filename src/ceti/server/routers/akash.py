"""The Akash market over REST, for the operator's chain bridge (admin tokens only): orders in, leases won and
closed, and what the fabric bid and runs."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ceti.networks.base import NetworkError
from ceti.networks.config import AkashMarket
from ceti.server import schemas
from ceti.server.deps import AdminDep, SessionDep
from ceti.server.errors import BadRequest, Conflict
from ceti.server.services import akash_market as svc

router = APIRouter(prefix="/v1/networks/akash", tags=["akash market"],
                   responses=schemas.responses(*schemas.COMMON_ERRORS, 400, 403, 404, 409))

MAX_SDL_CHARS = 1024 * 1024
OrderId = Annotated[str, Path(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9._/-]+$",
                              description="owner/dseq/gseq/oseq as on chain")]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order: dict[str, Any] | None = Field(None, description="one open order, as the chain lists it")
    sdl: str | None = Field(None, max_length=MAX_SDL_CHARS, description="or an SDL: the orders its groups open")
    deployment_id: str | None = Field(None, max_length=150, pattern=r"^[A-Za-z0-9._-]+/[0-9]+$",
                                      description="owner/dseq of the SDL's deployment")

    @model_validator(mode="after")
    def _one(self) -> OrderIn:
        if (self.order is None) == (self.sdl is None):
            raise ValueError("give exactly one of order or sdl")
        return self


class LeaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_id: str = Field(..., min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._/-]+$")
    sdl: str = Field(..., min_length=1, max_length=MAX_SDL_CHARS, description="the tenant's manifest (SDL)")


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


class LeaseOut(BaseModel):
    order_id: str
    state: str
    reason: str
    bid: dict[str, Any] | None
    usd_per_hour: float | None
    lease_id: str | None
    job_ids: list[str]
    replicas: int
    created_at: float
    updated_at: float


def _market(request: Request) -> AkashMarket:
    market = getattr(request.app.state, "akash_market", None)
    if market is None:
        raise Conflict("this server is no Akash provider: its networks configuration has no akash section")
    return market


@router.post("/orders", response_model=list[LeaseOut])
def post_orders(body: OrderIn, request: Request, s: SessionDep, _: AdminDep) -> list[dict]:
    """Offer open orders: each is bid on or declined (with the reason) at once."""
    market = _market(request)
    try:
        orders = svc.orders_of(body.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(f"order.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    except NetworkError as exc:
        raise BadRequest(str(exc)) from None
    now = time.time()
    out = [svc.lease_out(svc.receive_order(s, market, order, now)) for order in orders]
    s.commit()  # before the answer: the bridge acts on it at once
    return out


@router.post("/orders/{order_id:path}/lease", response_model=LeaseOut)
def post_lease(order_id: OrderId, body: LeaseIn, request: Request, s: SessionDep, _: AdminDep) -> dict:
    """The tenant accepted the bid: run its manifest."""
    out = svc.lease_out(svc.lease_won(s, _market(request), order_id, body.lease_id, body.sdl, time.time()))
    s.commit()  # the jobs exist before the answer names them and before the round looks for them
    request.app.state.scheduler.poke()
    return out


@router.post("/orders/{order_id:path}/lost", response_model=LeaseOut)
def post_lost(order_id: OrderId, body: CloseIn, s: SessionDep, _: AdminDep) -> dict:
    """Another provider won the order."""
    out = svc.lease_out(svc.bid_lost(s, order_id, body.reason, time.time()))
    s.commit()
    return out


@router.post("/orders/{order_id:path}/close", response_model=LeaseOut)
def post_close(order_id: OrderId, body: CloseIn, s: SessionDep, _: AdminDep) -> dict:
    """The lease (or the order) closed: its jobs are stopped."""
    out = svc.lease_out(svc.lease_closed(s, order_id, body.reason, time.time()))
    s.commit()
    return out


@router.get("/leases", response_model=list[LeaseOut])
def get_leases(s: SessionDep, _: AdminDep,
               state: Annotated[str | None, Query(pattern=r"^[a-z_]{1,16}$")] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    return [svc.lease_out(row) for row in svc.list_leases(s, state, limit)]
