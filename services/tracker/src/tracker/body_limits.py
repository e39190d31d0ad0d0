"""Request bodies bounded before they are read: 413 problem details past the limit.

A pure ASGI middleware, so the limit holds before FastAPI buffers and parses the body: a
declared ``Content-Length`` over the limit is refused without reading a byte, and a chunked
body is counted as it streams and cut off at the limit. Each path may have its own limit
(``/v1/batch`` carries up to 1,000 events, the other endpoints one).
"""

from __future__ import annotations

from collections.abc import Mapping

from referral_kit.http import problem
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics


class BodyTooLarge(Exception):
    """Raised to the application when a streamed body passes its limit."""


class RequestBodyLimits:
    """Refuses with 413 any request whose body exceeds its path's limit."""

    def __init__(self, app: ASGIApp, *, default_bytes: int,
                 by_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.by_path = dict(by_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"], self.default_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(f"request body over {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the application's own answer to the cut-off body is replaced
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        metrics.OVERSIZED_BODIES.inc()
        batch = scope["path"].rstrip("/").endswith("/batch")
        fix = ("split the events into several batches (at most 1,000 events each)" if batch
               else "send one event per request with its fields within their documented "
                    "lengths, or many events through POST /v1/batch")
        response = problem(413, "Content too large",
                           f"The request body is larger than {limit} bytes, the limit of "
                           f"{scope['path']}; {fix}.", max_bytes=limit)

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
