"""`notifier`: run the notifier (HTTP + consumer) or apply its migrations."""

from __future__ import annotations

import asyncio
import sys

import typer
from pydantic import ValidationError
from referral_kit.heap import freeze_startup_heap
from referral_kit.logs import configure_logging
from referral_kit.migrations import migrate as apply_migrations

from .config import NotifierSettings

app = typer.Typer(help="Referral notifier (see .env.example for settings).",
                  no_args_is_help=True)


def _settings() -> NotifierSettings:
    try:
        settings = NotifierSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        print(f"notifier: invalid settings: {problems}", file=sys.stderr)
        raise typer.Exit(2) from None
    configure_logging("notifier", level=settings.log_level, fmt=settings.log_format)
    return settings


@app.command()
def run() -> None:
    """Consume reward events and send emails; HTTP on NOTIFIER_HOST:NOTIFIER_PORT (8003)."""
    import uvicorn

    from .app import create_app

    settings = _settings()
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=False, server_header=False)


@app.command()
def migrate() -> None:
    """Apply pending database migrations of the ``notifier`` schema."""
    settings = _settings()
    applied = asyncio.run(apply_migrations(settings.database_url, schema="notifier",
                                           package="notifier"))
    print(f"notifier: {len(applied)} migration(s) applied", file=sys.stderr)
