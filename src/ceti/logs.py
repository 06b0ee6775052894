"""Structured logs for the server and the agent: one JSON object per line, or readable lines for a terminal.

Every record, whether written with `structlog.get_logger()` or with the standard `logging` module (uvicorn,
SQLAlchemy and most of our own modules), goes through one handler, so the output is uniform. Ids of the job, node
and allocation a record is about are attached three ways:
- for a request: `RequestIds`, an ASGI middleware, binds the ids it finds in the URL path for the request's life;
- for a stretch of code: `bound_ids(job_id=...)`, or `bind_ids` / `unbind_ids` (context variables, so threads
  and tasks do not mix their ids);
- for the whole process: `set_process_ids(node_id=...)` (an agent is one node);
- for one record: `log.info("...", extra={"job_id": ...})` with the standard library.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

FORMATS = ("json", "console")
IDS = ("job_id", "node_id", "allocation_id")
_process_ids: dict[str, Any] = {}
_HANDLER_NAME = "ceti"


def _add_process_ids(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _process_ids.items():
        event.setdefault(key, value)
    return event


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_process_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(allow=IDS),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def resolve_format(format: str | None) -> str:
    """`json` or `console`; None or `auto` picks console on a terminal and JSON otherwise (files, collectors)."""
    if format in (None, "", "auto"):
        return "console" if sys.stderr.isatty() else "json"
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (or auto), not {format!r}")
    return format


def configure_logging(format: str | None = "json", level: str | int = "info") -> None:
    """Send every log record of the process to standard error in `format` (json | console) at `level` and up.

    Safe to call again (tests, a CLI command calling another): it replaces what an earlier call installed.
    """
    fmt = resolve_format(format)
    levels = logging.getLevelNamesMapping()
    numeric = level if isinstance(level, int) else levels.get(str(level).upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    shared = _shared_processors()
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer()
        tail: list[Any] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = []
    structlog.configure(
        processors=[*shared, structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # ours from an earlier call, and logging.basicConfig's plain one (not subclasses: a test's capture handler)
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME or type(h) is logging.StreamHandler]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn configures its own handlers unless told not to (log_config=None); either way, ours win
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def get_logger(name: str | None = None, **ids: Any) -> structlog.stdlib.BoundLogger:
    log = structlog.get_logger(name)
    return log.bind(**ids) if ids else log


def set_process_ids(**ids: Any) -> None:
    """Ids that hold for the whole process (an agent's node_id once it has registered)."""
    _process_ids.update({k: v for k, v in ids.items() if v is not None})


def bind_ids(**ids: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def unbind_ids(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


@contextmanager
def bound_ids(**ids: Any) -> Iterator[None]:
    """Records written inside the block carry these ids."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield


# URL paths that name a job, a node or an allocation
_PATH_IDS = [
    (re.compile(r"^/v1/(?:dashboard/)?jobs/([^/]+)"), "job_id"),
    (re.compile(r"^/v1/(?:dashboard/|agent/)?nodes/([^/]+)"), "node_id"),
    (re.compile(r"^/v1/agent/allocations/([^/]+)"), "allocation_id"),
]


def ids_in_path(path: str) -> dict[str, str]:
    out = {}
    for pattern, key in _PATH_IDS:
        hit = pattern.match(path)
        if hit:
            out[key] = hit.group(1)[:64]
    return out


class RequestIds:
    """ASGI middleware: a request's log records carry the job, node or allocation id its URL names."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ids = ids_in_path(scope.get("path", ""))
        if not ids:
            return await self.app(scope, receive, send)
        with structlog.contextvars.bound_contextvars(**ids):
            return await self.app(scope, receive, send)
