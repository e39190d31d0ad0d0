"""Container health check without curl (python:*-slim has none): GET a probe, exit 0 on 2xx.

    python /opt/referral/healthcheck.py [PORT] [PATH]

PORT defaults to $HEALTH_PORT, then to the port written at build time for the image's main
process (/opt/referral/health-port); PATH defaults to /healthz. Standard library only, so
it starts fast and works in every image.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT_FILE = Path(__file__).with_name("health-port")


def resolve_port(argv: list[str], env: dict[str, str], port_file: Path) -> int:
    if argv:
        return int(argv[0])
    if env.get("HEALTH_PORT"):
        return int(env["HEALTH_PORT"])
    if port_file.is_file():
        return int(port_file.read_text().strip())
    raise SystemExit("healthcheck: no port (argument, HEALTH_PORT or health-port file)")


def check(port: int, path: str = "/healthz", timeout: float = 3.0) -> bool:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = resolve_port(args[:1], dict(os.environ), DEFAULT_PORT_FILE)
    path = args[1] if len(args) > 1 else "/healthz"
    return 0 if check(port, path) else 1


if __name__ == "__main__":
    sys.exit(main())
