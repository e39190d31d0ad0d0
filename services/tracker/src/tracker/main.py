"""`tracker`: run the tracker's HTTP server (TRACKER_HOST:TRACKER_PORT, default 127.0.0.1:8001)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn
from pydantic import ValidationError
from referral_kit.heap import freeze_startup_heap
from referral_kit.logs import configure_logging

from .app import create_app
from .config import TrackerSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tracker", description="Referral tracker: link redirects, clicks, conversions "
        "and reversals into Kafka. Settings come from the environment (see .env.example).")
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve",
                        help="serve the HTTP API (the default)")
    parser.parse_args(argv)
    try:
        settings = TrackerSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        print(f"tracker: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("tracker", level=settings.log_level, fmt=settings.log_format)
    serve(create_app(settings), host=settings.host, port=settings.port,
          forwarded_allow_ips=settings.forwarded_allow_ips)


def serve(app: Any, *, host: str, port: int, forwarded_allow_ips: str = "127.0.0.1"
          ) -> None:
    """Run ``app`` with the tracker's server options (the benchmark's baseline uses them
    too, so the comparison is between applications, not servers).

    What was built before serving (modules, models, routes, the app) is frozen out of the
    garbage collector's full passes (referral_kit.heap)."""
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, log_config=None, access_log=False,
                server_header=False)


if __name__ == "__main__":
    main()
