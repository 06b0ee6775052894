"""The fast lane: the agent protocol's hot calls and the job submit, served without FastAPI's per-request machinery.

Under thousands of agents these few calls are nearly all the traffic, and a profile of the server under load
showed most of its CPU in the framework rather than in the work: dependency solving, a thread hop for the
session, another for the caller, another for the endpoint, response validation. Here each call is one body
parse with the same pydantic model, one thread hop that opens the session, authenticates and runs the same
reply function the FastAPI route runs (routers/agent.py, routers/jobs.py), and one serialization through the
same response model. Errors are raised as the route would raise them, so the app's exception handlers answer
them alike. Anything unusual (a body that is not JSON, a header out of bounds) is handed to the FastAPI route
itself, so odd input gets exactly the answer it always got. The routes stay in the OpenAPI schema; the fast
routes are hidden from it and only shadow them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from ceti.server import metrics, schemas
from ceti.server.background.heartbeat_clock import HeartbeatClock
from ceti.server.routers.agent import heartbeat_reply, logs_reply, register_reply, unchanged_answer
from ceti.server.routers.jobs import submit_reply
from ceti.server.services.agents import quiet_heartbeat_sql, quiet_heartbeat_sql_async
from ceti.server.services.tokens import Principal, authenticate, bearer_token, hash_token

log = logging.getLogger("ceti.server.fastlane")

# set on a request the fast lane hands back: the router then matches the FastAPI route behind it
_HANDED_BACK = "ceti.fastlane.handed_back"
MAX_IDEMPOTENCY_KEY = 128  # as the submit route's header declares

# (session, caller, path params, parsed body, headers, app state) -> (status, answer)
Work = Callable[[Any, Principal, dict[str, str], Any, Any, Any], tuple[int, dict[str, Any]]]


class _FastRoute(Route):
    """A route that steps aside for a request the fast lane handed back."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_HANDED_BACK):
            return Match.NONE, {}
        return super().matches(scope)


class _Lane:
    """One fast call: parse, then one worker-thread call that authenticates, works and commits."""

    def __init__(self, app: FastAPI, body: type[BaseModel] | None, out: type[BaseModel], work: Work,
                 quiet: Callable[..., Any] | None = None):
        self.app, self.body, self.out, self.work = app, body, out, work
        self.quiet = quiet  # an answer that needs no session at all (the quiet heartbeat), tried first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        parsed = self._parse(raw) if content_type == "application/json" else None
        if parsed is None or not self._headers_ok(request):
            return await self._hand_back(scope, raw, send)
        token = bearer_token(request.headers.get("authorization"))
        state = self.app.state
        params = dict(scope.get("path_params") or {})
        if self.quiet is not None and token and await self.quiet(state, token, params, parsed):
            status, answer = 200, unchanged_answer(parsed.epoch)
        else:
            status, answer = await anyio.to_thread.run_sync(self._run, state, token, params, parsed, request.headers,
                                                            scope)
        content = self.out.model_validate(answer).model_dump_json().encode()
        await Response(content, status_code=status, media_type="application/json")(scope, receive, send)

    def _parse(self, raw: bytes) -> Any:
        try:
            if self.body is not None:
                return self.body.model_validate_json(raw)
            value = json.loads(raw)
        except (ValidationError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @staticmethod
    def _headers_ok(request: Request) -> bool:
        key = request.headers.get("idempotency-key")
        return key is None or len(key) <= MAX_IDEMPOTENCY_KEY

    def _run(self, state: Any, token: str | None, params: dict[str, str], parsed: Any, headers: Any,
             scope: Scope) -> tuple[int, dict[str, Any]]:
        with state.sessions() as s:  # closing it rolls back whatever an error left uncommitted
            who = authenticate(s, token)
            scope.setdefault("state", {})["principal"] = who  # for the audit trail, as the route does
            result = self.work(s, who, params, parsed, headers, state)
            s.commit()
            return result

    async def _hand_back(self, scope: Scope, raw: bytes, send: Send) -> None:
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return {"type": "http.disconnect"}

        await self.app.router({**scope, _HANDED_BACK: True}, replay, send)


class QuietReader:
    """Answers the quiet heartbeat with the driver's own SQL (services/agents.py, `quiet_heartbeat_sql`).

    It reads on the event loop, with no thread hop and no session: on SQLite through a connection of its own (an
    indexed read of a WAL database takes tens of microseconds and never waits for a writer); on PostgreSQL
    through a few autocommit connections of psycopg's async driver (`AsyncReaders`), one round trip per
    heartbeat. Anything unexpected (a failed read, a database restarting, a read slower than
    `QUIET_READ_TIMEOUT_S`) answers "not quiet" and the full path decides. The heartbeat's time goes to `clock`,
    which writes it with others; the app sets a reader up only while that clock runs."""

    def __init__(self, engine: Any, settings: Any, clock: HeartbeatClock):
        self.settings, self.clock = settings, clock
        sqlite = engine.dialect.name == "sqlite"
        database = engine.url.database
        # a file, not an in-memory database (which only the engine's own connections can see)
        self.sqlite_path = database if sqlite and database and database != ":memory:" else None
        self._conn: sqlite3.Connection | None = None
        self._pg = None if sqlite else AsyncReaders(
            engine.url.set(drivername="postgresql").render_as_string(hide_password=False))

    async def __call__(self, token: str, params: dict[str, str], body: Any) -> bool:
        if body.finished or body.epoch is None:
            return False
        node_id, now = params["node_id"], time.time()
        args = (hash_token(token), node_id, body.running, body.epoch, self.settings, now)
        try:
            if self.sqlite_path is not None:
                quiet = quiet_heartbeat_sql(self._sqlite(), "?", *args)
            elif self._pg is not None:
                quiet = await asyncio.wait_for(self._pg.read(args), QUIET_READ_TIMEOUT_S)
            else:
                return False
        except Exception as exc:  # noqa: BLE001  (the full path answers, and reports a real failure itself)
            log.debug("quiet heartbeat read failed, the full path answers: %s", exc)
            self.close()
            return False
        if quiet:
            self.clock.note(node_id, now)
            metrics.record_heartbeat()
        return quiet

    def _sqlite(self) -> sqlite3.Connection:
        if self._conn is None:
            # autocommit: every read sees the newest commit; only the event loop's thread uses it
            self._conn = sqlite3.connect(self.sqlite_path, isolation_level=None, timeout=0.1)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        self.close()
        if self._pg is not None:
            await self._pg.aclose()


QUIET_READ_TIMEOUT_S = 2.0


class AsyncReaders:
    """A few autocommit connections of psycopg's async driver, opened on first need and used on the event loop:
    a read sees the newest commit, waits for no lock and no worker thread. At most `size` reads run at once;
    a connection whose read failed or was cancelled is closed, not reused."""

    def __init__(self, conninfo: str, size: int = 4):
        self.conninfo = conninfo
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Any] = []

    async def read(self, args: tuple) -> bool:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                async with conn.cursor() as cursor:
                    quiet = await quiet_heartbeat_sql_async(cursor, *args)
            except BaseException:
                await self._discard(conn)
                raise
            self._idle.append(conn)
            return quiet

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                     connect_timeout=int(QUIET_READ_TIMEOUT_S))

    @staticmethod
    async def _discard(conn: Any) -> None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close; it is dropped either way
            await asyncio.shield(conn.close())

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)


def _register(s, who, params, body, headers, state):
    return 200, register_reply(s, who, body, state)


def _heartbeat(s, who, params, body, headers, state):
    return 200, heartbeat_reply(s, who, params["node_id"], body, state)


def _logs(s, who, params, body, headers, state):
    return 200, logs_reply(s, who, params["allocation_id"], body, state)


def _submit(s, who, params, spec, headers, state):
    out, created = submit_reply(s, who, spec, headers.get("idempotency-key"), state)
    return (201 if created else 200), out


def install(app: FastAPI) -> None:
    """Put the fast routes in front of the app's own (call after every router is included). The quiet heartbeat
    reads through `app.state.quiet_reader` when the app has set one up."""

    async def quiet(state: Any, token: str, params: dict[str, str], body: Any) -> bool:
        reader = getattr(state, "quiet_reader", None)
        return reader is not None and await reader(token, params, body)

    lanes = [
        ("/v1/agent/register", schemas.RegisterIn, schemas.RegisterOut, _register, None),
        ("/v1/agent/nodes/{node_id}/heartbeat", schemas.HeartbeatIn, schemas.HeartbeatOut, _heartbeat, quiet),
        ("/v1/agent/allocations/{allocation_id}/logs", schemas.LogUploadIn, schemas.LogUploadOut, _logs, None),
        ("/v1/jobs", None, schemas.JobOut, _submit, None),
    ]
    routes = [_FastRoute(path, _Lane(app, body, out, work, pre), methods=["POST"], include_in_schema=False)
              for path, body, out, work, pre in lanes]
    app.router.routes[0:0] = routes

