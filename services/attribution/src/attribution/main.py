"""`attribution`: run one Faust worker of the attribution processor (settings from the env)."""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop
from pydantic import ValidationError
from referral_kit.logs import configure_logging

from .app import create_app
from .config import AttributionSettings


def main() -> None:
    try:
        settings = AttributionSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        print(f"attribution: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("attribution", level=settings.log_level, fmt=settings.log_format)
    use_event_loop()
    app = create_app(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower(),
                "--web-host", settings.web_host, "--web-port", str(settings.web_port)]
    app.main()


def use_event_loop() -> None:
    """uvloop, as the other services run on (uvicorn's, the rewards worker's): ~7 % less CPU
    for the same events (docs/performance.md, "2026-12-05 noon"). A ``FAUST_LOOP`` set in
    the environment (faust reads it when imported) is left as it is."""
    if not os.environ.get("FAUST_LOOP"):
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    main()
