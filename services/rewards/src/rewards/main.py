"""`rewards`: the admin API, the worker, and migrations (settings from the environment)."""

from __future__ import annotations

import asyncio
import sys

import typer
from pydantic import ValidationError
from referral_kit.heap import freeze_startup_heap
from referral_kit.logs import configure_logging
from referral_kit.migrations import migrate as apply_migrations

from .config import RewardsSettings
from .db import SCHEMA

app = typer.Typer(help="Referral rewards service (see .env.example for settings).",
                  no_args_is_help=True)


def _settings(component: str) -> RewardsSettings:
    try:
        settings = RewardsSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        print(f"rewards: invalid settings: {problems}", file=sys.stderr)
        raise typer.Exit(2) from None
    configure_logging(f"rewards-{component}", level=settings.log_level, fmt=settings.log_format)
    return settings


@app.command()
def api() -> None:
    """Serve the admin API on REWARDS_HOST:REWARDS_PORT (default 127.0.0.1:8002)."""
    import uvicorn

    from .api.app import create_app

    settings = _settings("api")
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=False, server_header=False)


@app.command()
def worker() -> None:
    """Consume attribution decisions, approve rewards when their hold ends, relay the outbox."""
    import uvloop

    from .worker.run import run_worker

    # uvloop, as uvicorn gives the API: asyncpg and aiokafka spend much of the worker's time
    # in the event loop's socket handling (docs/performance.md, Rewards).
    settings = _settings("worker")
    freeze_startup_heap()
    uvloop.run(run_worker(settings))


@app.command()
def migrate() -> None:
    """Apply pending database migrations of the ``rewards`` schema."""
    settings = _settings("migrate")
    applied = asyncio.run(apply_migrations(settings.database_url, schema=SCHEMA,
                                           package="rewards"))
    print(f"rewards: {len(applied)} migration(s) applied", file=sys.stderr)
