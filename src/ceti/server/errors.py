"""Error types of the control plane, mapped to HTTP in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ceti.spec import JobSpecError


class ApiError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(JobSpecError)
    async def _spec_error(_req: Request, exc: JobSpecError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "errors": [{"path": p, "reason": r} for p, r in exc.errors]}, status_code=422
        )

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(_req: Request, exc: Exception) -> JSONResponse:
        # the transaction was rolled back: nothing of this request was applied, so a retry is safe
        if isinstance(exc, DataError):  # e.g. PostgreSQL refuses a NUL character in text
            return JSONResponse({"detail": f"the database refused a value: {str(exc.orig).splitlines()[0]}",
                                 "errors": []}, status_code=422)
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_connection_error(exc):
            raise exc
        return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['path']}: {e['reason']}" if e["path"] else e["reason"] for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError))
