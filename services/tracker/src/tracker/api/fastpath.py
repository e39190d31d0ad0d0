"""The ingest endpoints' requests sent straight to their handlers, past what does nothing
for them.

A POST to ``/v1/conversions`` (or another :class:`~tracker.api.routing.LeanRoute` given
here) otherwise crosses, after FastAPI's outer layers, the CORS and body-limit middleware,
FastAPI's exit-stack middleware, route matching router by router and the per-request
exit stacks of ``request_response``: some 30 µs a request on the target machine
(docs/performance.md), spent on steps that, for such a request, change nothing:

- CORS acts only on requests with an ``Origin`` header (browsers): those go the long way;
- the body limit refuses bodies longer than the path's limit: a request declaring a
  ``Content-Length`` within it (uvicorn delivers exactly that many bytes) passes it;
- the exit stacks serve ``yield`` dependencies and uploads, which a lean plan never has.

So this middleware, installed outermost among the application's own, hands such a request
to the route's lean handler inside Starlette's own ``ExceptionMiddleware`` built from the
application's exception handlers (identical errors: problem details, 422, 429, 503…). Every
other request, and every request while dependencies are overridden (tests), takes the
usual path. It steps aside entirely when the application has middleware it does not know,
whose effect it could not vouch for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..body_limits import RequestBodyLimits
from .routing import Handler, LeanRoute


class IngestFastPath:
    """ASGI middleware: see the module's doc. ``routes`` are those of routers the
    application includes without a prefix of its own (their paths as declared)."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self._routes = list(routes)
        self._targets: dict[str, ASGIApp] | None = None  # path -> app, built on first use
        self._limits: tuple[int, dict[str, int]] = (0, {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            targets = self._targets
            if targets is None:
                targets = self._targets = self._prepare(scope["app"])
            target = targets.get(get_route_path(scope))
            if target is not None and self._plain(scope):
                fastapi_app: FastAPI = scope["app"]
                if not fastapi_app.dependency_overrides:
                    await target(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _plain(self, scope: Scope) -> bool:
        """No Origin header (CORS does nothing), a declared body within the limit."""
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"origin" or name == b"transfer-encoding":
                return False
        if length is None:
            return False
        try:
            size = int(length)
        except ValueError:
            return False
        default, by_path = self._limits
        return 0 <= size <= by_path.get(scope["path"], default)

    def _prepare(self, app: FastAPI) -> dict[str, ASGIApp]:
        """The lean routes to serve directly, or none when the application has middleware
        this does not know (or no body limits to honour)."""
        limits = None
        for middleware in app.user_middleware:
            if middleware.cls is RequestBodyLimits:
                kwargs = middleware.kwargs
                limits = (int(kwargs["default_bytes"]), dict(kwargs.get("by_path") or {}))
            elif middleware.cls not in (CORSMiddleware, IngestFastPath):
                return {}
        if limits is None:
            return {}
        self._limits = limits
        # As Starlette builds its ExceptionMiddleware (500 and Exception go to the server
        # error middleware outside, which this stays inside of).
        handlers = {key: value for key, value in app.exception_handlers.items()
                    if key not in (500, Exception)}
        targets: dict[str, ASGIApp] = {}
        for route in self._routes:
            if (isinstance(route, LeanRoute) and route.lean_handler is not None
                    and route.methods == {"POST"}):
                targets[route.path] = ExceptionMiddleware(_serve(route.lean_handler),
                                                          handlers=handlers, debug=app.debug)
        return targets


def _serve(handler: Handler) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


def fast_path_routes(*routers: Any) -> list[BaseRoute]:
    """The routes of ``routers`` (APIRouters included by the app without a prefix)."""
    return [route for router in routers for route in router.routes]
