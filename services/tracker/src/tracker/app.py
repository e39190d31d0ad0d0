"""The tracker's FastAPI application, wired in one place (no I/O until the lifespan starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from referral_kit.http import health_router, install_problem_handlers

from .api import batch, ingest, links
from .api.fastpath import IngestFastPath, fast_path_routes
from .body_limits import RequestBodyLimits
from .config import TrackerSettings
from .runtime import TrackerRuntime


def create_app(settings: TrackerSettings | None = None) -> FastAPI:
    """A tracker app for ``settings`` (read from the environment when omitted). Its
    lifespan connects to the broker in the background and disconnects on shutdown."""
    settings = settings or TrackerSettings()
    runtime = TrackerRuntime(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # FastAPI's OpenTelemetry (see TrackerSettings.opentelemetry)
    telemetry: TelemetryConfig = ({} if settings.opentelemetry else
                                  {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(title="Referral tracker", version="0.1.0", lifespan=lifespan,
                  telemetry=telemetry)
    app.state.runtime = runtime
    install_problem_handlers(app)
    app.add_middleware(RequestBodyLimits, default_bytes=settings.max_body_bytes,
                       by_path={"/v1/batch": settings.max_batch_body_bytes})
    # Added after the body limits, so CORS wraps them and a browser can read a 413 too.
    # Publishable keys are public and meant for shop pages on any origin; secret-key calls
    # come from servers, which CORS does not concern.
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["POST"], allow_credentials=False,
                       allow_headers=["Content-Type", "X-Publishable-Key"])
    if settings.fast_path:
        # Outermost: plain server-to-server ingest requests skip the layers above that do
        # nothing for them (see api/fastpath.py); the routers below are included as is.
        app.add_middleware(IngestFastPath, routes=fast_path_routes(ingest.router, batch.router))
    # The ingest routers first: requests are matched router by router, and each miss costs
    # several µs (the order changes nothing else: no two routers share a path).
    app.include_router(ingest.router)
    app.include_router(batch.router)
    app.include_router(links.router)
    app.include_router(health_router(runtime.readiness))
    return app
