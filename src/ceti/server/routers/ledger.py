"""Usage, earnings and budgets over REST. Amounts are integers of micro-USD (1 USD = 1,000,000)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from ceti.server import schemas
from ceti.server.deps import AdminDep, PrincipalDep, SessionDep
from ceti.server.services import ledger as svc

router = APIRouter(prefix="/v1", tags=["ledger"], responses=schemas.responses(*schemas.COMMON_ERRORS))

# UNIX seconds; the upper bound keeps the value a plain float any database stores (year 5138)
TimeQuery = Annotated[float | None, Query(ge=0, le=1e11, allow_inf_nan=False)]
FromQuery = Annotated[float | None, Query(alias="from", ge=0, le=1e11, allow_inf_nan=False)]
RefQuery = Annotated[str | None, Query(min_length=1, max_length=64, description="a name or an id")]


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: Decimal = Field(..., ge=0, le=svc.MAX_CAP_MICRO // svc.MICRO_PER_USD, decimal_places=6,
                                allow_inf_nan=False,
                                description="the most the project may be charged in all, in USD (at most 6 decimals)")


class BudgetOut(BaseModel):
    project_id: str
    project: str
    cap_micro_usd: int | None
    spent_micro_usd: int
    remaining_micro_usd: int | None
    exhausted: bool


class JobUsageOut(BaseModel):
    job_id: str | None
    name: str
    charged_micro_usd: int
    from_: float | None = Field(None, alias="from")
    to: float | None


class ProjectUsageOut(BudgetOut):
    charged_micro_usd: int
    jobs: list[JobUsageOut]


class UsageOut(BaseModel):
    from_: float | None = Field(None, alias="from")
    to: float | None
    projects: list[ProjectUsageOut]


class NodeEarningsOut(BaseModel):
    node_id: str | None
    hostname: str
    earned_micro_usd: int


class ProviderEarningsOut(BaseModel):
    provider_id: str
    provider: str
    earned_micro_usd: int
    nodes: list[NodeEarningsOut]


class EarningsOut(BaseModel):
    from_: float | None = Field(None, alias="from")
    to: float | None
    providers: list[ProviderEarningsOut]
    fabric_fee_micro_usd: int | None = Field(None, description="the fabric's net in the range (admin only)")


def _range(t_from: float | None, t_to: float | None) -> None:
    try:
        svc.check_range(t_from, t_to)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", "from"), "msg": str(exc), "type": "value_error"}]) from None


@router.get("/usage", response_model=UsageOut, response_model_by_alias=True, responses=schemas.responses(403, 404))
def usage(s: SessionDep, who: PrincipalDep, project: RefQuery = None,
          t_from: FromQuery = None, to: TimeQuery = None):
    """What projects were charged, per job, for metered time ending in [from, to). A project token sees its own."""
    _range(t_from, to)
    return svc.usage(s, who, project, t_from, to)


@router.get("/earnings", response_model=EarningsOut, response_model_by_alias=True,
            responses=schemas.responses(403, 404))
def earnings(s: SessionDep, who: PrincipalDep, provider: RefQuery = None,
             t_from: FromQuery = None, to: TimeQuery = None):
    """What providers earned, per node, for metered time ending in [from, to). A provider token sees its own."""
    _range(t_from, to)
    return svc.earnings(s, who, provider, t_from, to)


@router.get("/budgets", response_model=list[BudgetOut], responses=schemas.responses(403))
def list_budgets(s: SessionDep, who: PrincipalDep):
    """Every project's budget (admin), or the caller's own project's."""
    return svc.get_budget(s, who, None)


@router.get("/budgets/{project}", response_model=BudgetOut, responses=schemas.responses(403, 404))
def get_budget(project: str, s: SessionDep, who: PrincipalDep):
    return svc.get_budget(s, who, project)[0]


@router.put("/budgets/{project}", response_model=BudgetOut, responses=schemas.responses(400, 403, 404))
def set_budget(project: str, body: BudgetIn, s: SessionDep, _: AdminDep):
    """Cap what a project may be charged in all (admin). A cap already reached stops its work now."""
    out = svc.set_budget(s, project, svc.to_micro(body.amount_usd), time.time())
    s.commit()
    return out


@router.delete("/budgets/{project}", response_model=BudgetOut, responses=schemas.responses(403, 404))
def clear_budget(project: str, s: SessionDep, _: AdminDep):
    """Remove a project's cap (admin)."""
    out = svc.set_budget(s, project, None, time.time())
    s.commit()
    return out
