"""Read-only view of the scheduling loop (for operators and `ceti bench control-plane`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ceti.server.deps import AdminDep

router = APIRouter(prefix="/v1", tags=["admin"], responses={
    401: {"description": "missing, invalid or revoked token"},
    403: {"description": "this needs an admin token"},
    413: {"description": "request body too large"},
})


class SchedulerOut(BaseModel):
    last_round_s: float | None = Field(None, description="duration of the last completed round")
    last_round_at: float | None = Field(None, description="when the last round completed (epoch seconds)")
    last_error: str | None = None
    rounds: int = Field(0, description="rounds completed since this server started")
    recent_round_s: list[float] = Field(default_factory=list, description="the latest round durations, oldest first")
    replica_id: str | None = Field(None, description="this server replica (made at its start)")
    schedules: bool = Field(True, description="whether this replica takes part in scheduling (false: started with "
                                               "--no-schedule, it serves requests only and never leads)")
    leader: bool = Field(False, description="whether this replica holds the scheduler lease and runs the rounds")
    term: int | None = Field(None, description="the latest term this replica led in (a takeover increments it)")
    lease_expires_at: float | None = Field(None, description="when this replica's lease runs out unless renewed")


@router.get("/scheduler", response_model=SchedulerOut)
def scheduler(request: Request, _: AdminDep):
    """This replica's scheduling loop: the last round, how many rounds ran, the latest round durations, and
    whether this replica leads (only the leader runs rounds; docs/replicas.md)."""
    loop = request.app.state.scheduler
    elector = loop.leader
    return {
        "last_round_s": loop.last_round_s,
        "last_round_at": loop.last_round_at,
        "last_error": loop.last_error,
        "rounds": loop.rounds,
        "recent_round_s": list(loop.recent_round_s),
        "replica_id": elector.replica_id,
        "schedules": request.app.state.settings.schedule,
        "leader": elector.term() is not None,
        "term": elector.last_term,
        "lease_expires_at": elector.lease_expires_at,
    }
