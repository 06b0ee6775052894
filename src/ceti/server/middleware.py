"""Cross-cutting request guards: per-token rate limits and the audit trail."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ceti.store import models as m


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per caller. Per replica: N replicas admit up to N times the rate, which is the point of
    a guard against one runaway client rather than a quota."""

    def __init__(self, rate_per_s: float, burst: float, max_callers: int = 100_000):
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._max_callers = max_callers

    def admit(self, key: str, now: float) -> float:
        """0 when admitted, else the seconds until the next request would be."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._max_callers:
                    self._buckets.clear()  # bounded memory under a flood of distinct callers
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def caller_key(auth: str, path: str, remote: str) -> str:
    base = hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else f"ip:{remote}"
    # many nodes share one provider token: each node (and each allocation's log upload) is its own caller
    if path.startswith("/v1/agent/"):
        parts = path.split("/")
        if len(parts) > 5:
            return f"{base}:{parts[4]}"
    return base


def _remote(request: Request) -> str:
    return request.client.host if request.client else "unknown"


PROOF_PATH = "/v1/agent/verifications/"


class RequestGuards:
    """Body size, rate limit, audit trail and the scheduler's nudge, as one plain ASGI middleware: the
    request path pays for one wrapper, not a task and a stream per guard."""

    def __init__(self, app, max_body_bytes: int, rate_per_s: float, burst: float,
                 max_proof_body_bytes: int | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        # a proof-of-hardware answer carries full rows of a VRAM-sized product: its own, larger limit
        self.max_proof_body_bytes = max_proof_body_bytes or max_body_bytes
        self.limiter = RateLimiter(rate_per_s, burst)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        headers = request.headers
        limit = self.max_proof_body_bytes if scope["path"].startswith(PROOF_PATH) else self.max_body_bytes
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _too_big(limit)(scope, receive, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body = await request.body()  # chunked upload: measure what actually came, then replay it
            if len(body) > limit:
                return await _too_big(limit)(scope, receive, send)
            receive = _replay(body)
        client = scope.get("client")
        key = caller_key(headers.get("authorization", ""), scope["path"], client[0] if client else "unknown")
        wait = self.limiter.admit(key, time.monotonic())
        if wait > 0:
            limited = JSONResponse({"detail": "too many requests; slow down"}, status_code=429,
                                   headers={"Retry-After": str(max(1, math.ceil(wait)))})
            return await limited(scope, receive, send)
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_and_note)
        who = scope.get("state", {}).get("principal")
        admin_action = who is not None and who.is_admin and scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if status in (401, 403) or admin_action:
            await run_in_threadpool(_audit, request, who, status)
        if scope["method"] == "POST" and scope["path"].startswith("/v1/jobs") and status < 300:
            request.app.state.scheduler.poke()  # a new job: schedule it now, not at the next tick


def _too_big(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _audit(request: Request, who, status: int) -> None:
    if who is not None:
        actor, kind = who.token_id, who.kind
    else:
        auth = request.headers.get("authorization", "")
        actor = "sha256:" + hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else "anonymous"
        kind = "unknown"
    try:
        with request.app.state.sessions() as s:
            s.add(m.AuditEntry(at=time.time(), actor=actor, actor_kind=kind,
                               action=f"{request.method} {request.url.path}"[:300], status=status,
                               remote=_remote(request)[:64]))
            s.commit()
    except Exception:  # the audit trail must not turn a refused request into a server error
        import logging

        logging.getLogger("ceti.server.audit").exception("could not write an audit entry")
