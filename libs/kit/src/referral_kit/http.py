"""HTTP pieces every FastAPI service shares: health, readiness, metrics, problem details."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"
ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def problem(status: int, title: str, detail: str, *, field: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem-details response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class ProblemError(Exception):
    """Raise from a view to answer with problem details."""

    def __init__(self, status: int, title: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.field, self.headers = field, headers


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, field=exc.field, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
        field = ".".join(loc) or None
        detail = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return problem(422, "Invalid request", f"{detail}. Fix this field and send again.",
                       field=field,
                       errors=[{"field": ".".join(str(p) for p in e.get("loc", ())
                                                  if p != "body"), "message": e.get("msg")}
                               for e in errors[:20]])

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail),
                       headers=getattr(exc, "headers", None))


def health_router(readiness: ReadinessCheck) -> APIRouter:
    """``/healthz`` (process alive), ``/readyz`` (dependencies reachable), ``/metrics``."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                            status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    return router
