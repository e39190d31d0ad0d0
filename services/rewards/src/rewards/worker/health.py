"""Probes for the rewards worker, which has no web app of its own: ``GET /healthz`` (process
alive), ``GET /readyz`` (database and consumer), ``GET /metrics`` (Prometheus text).

A deliberately tiny HTTP/1.0 server on asyncio streams (no uvicorn: it would take over the
worker's SIGTERM handling). Settings: ``REWARDS_WORKER_HOST`` (127.0.0.1) and
``REWARDS_WORKER_PORT`` (8005; ``0`` turns it off). A port that is already taken (say, two
workers on one laptop) is logged and the worker runs on without probes: in a container each
replica has its own network namespace, so the port is always free there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)

Readiness = Callable[[], Awaitable[dict[str, bool]]]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class WorkerHealthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REWARDS_WORKER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8005, ge=0, le=65535, description="Probe port; 0: no probe endpoint.")


class WorkerHealthServer:
    def __init__(self, readiness: Readiness, *, host: str, port: int) -> None:
        self._readiness = readiness
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0 in tests), or None when not serving."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> bool:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
        except OSError as exc:
            log.error("worker probe endpoint not served", host=self._host, port=self._port,
                      error=str(exc))
            return False
        log.info("worker probe endpoint", url=f"http://{self._host}:{self.port}/healthz")
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            for _ in range(100):  # skip the headers: none is needed
                if await asyncio.wait_for(reader.readline(), 5) in (b"\r\n", b"\n", b""):
                    break
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, ctype, body = await self._route(method, path)
            head = (f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            try:
                checks = await asyncio.wait_for(self._readiness(), 5)
            except Exception:
                checks = {"readiness_check": False}
            ok = all(checks.values())
            body = json.dumps({"status": "ready" if ok else "not_ready", "checks": checks})
            return (200 if ok else 503), "application/json", body.encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        return 404, "text/plain", b"not found\n"


async def start_probes(pool: Any, consumer: Any,
                       settings: WorkerHealthSettings | None = None) -> WorkerHealthServer:
    """Serve the worker's probes: ready while the database answers and the decision consumer
    runs. Returns the server (stop it on shutdown; it may not be serving, see the module)."""
    settings = settings or WorkerHealthSettings()

    async def readiness() -> dict[str, bool]:
        try:
            async with pool.acquire(timeout=2) as conn:
                database = bool(await conn.fetchval("SELECT true"))
        except Exception:
            database = False
        # Running, and not stuck retrying one poll for a minute (the database or broker
        # away); a loop that died is logged by the consumer and makes this false for good.
        return {"database": database,
                "consumer": bool(getattr(consumer, "healthy", consumer.running))}

    server = WorkerHealthServer(readiness, host=settings.host, port=settings.port)
    if settings.port:
        await server.start()
    return server
