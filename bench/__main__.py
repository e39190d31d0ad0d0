"""`python -m bench [area ...]`: run the benchmarks in order, print the figures, and exit
non-zero if any run failed (missed targets are for people to read, not failures)."""

from __future__ import annotations

import importlib
import sys
import time

from rich.console import Console
from rich.table import Table

from .results import load
from .summary import DETAIL, update

# each is bench/<area>.py with main() -> int
AREAS = ["tracker", "attribution", "e2e", "dashboard", "rewards"]


def main(argv: list[str]) -> int:
    console = Console()
    areas = argv or AREAS
    failed: list[str] = []
    for area in areas:
        console.rule(f"bench: {area}")
        started = time.monotonic()
        try:
            code = importlib.import_module(f"bench.{area}").main()
        except Exception:  # a crashed run is a failed run; the others still run
            console.print_exception()
            code = 1
        if code:
            failed.append(area)
        console.print(f"{area}: {'FAILED' if code else 'done'} in "
                      f"{time.monotonic() - started:.0f} s")
    table = Table(title="bench/results/latest.json")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in load().items():
        if key.split(".", 1)[0] in areas and not DETAIL.match(key):
            table.add_row(key, f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float)
                          else f"{value:,}")
    console.print(table)
    if update():  # the summary table at the top of docs/performance.md
        console.print("docs/performance.md: summary table updated")
    if failed:
        console.print(f"[red]failed runs: {', '.join(failed)}[/red]")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
