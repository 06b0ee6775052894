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


@router.get("/scheduler", response_model=SchedulerOut)
def scheduler(request: Request, _: AdminDep):
    """This replica's scheduling loop: the last round, how many rounds ran and the latest round durations."""
    loop = request.app.state.scheduler
    return {
        "last_round_s": loop.last_round_s,
        "last_round_at": loop.last_round_at,
        "last_error": loop.last_error,
        "rounds": loop.rounds,
        "recent_round_s": list(loop.recent_round_s),
    }
