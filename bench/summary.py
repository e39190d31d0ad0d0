"""The summary table at the top of docs/performance.md, from bench/results/latest.json and
latest.meta.json: every area's figures with when they were measured, the machine and the
command. ``python -m bench.summary`` rewrites the block between the two markers; ``make
bench`` does it after its runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .results import META, load

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
# Per-step and per-process detail stays in the area's own section.
DETAIL = re.compile(r"^e2e\.(rate_\d+_|cpu_s_)")


def _value(value: float | int) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}"


def render() -> str:
    figures = load()
    meta = json.loads(META.read_text()) if META.is_file() else {}
    machine = meta.get("machine", {})
    areas = meta.get("areas", {})
    lines = [
        f"Machine: {machine.get('cores', '?')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('system', '?')}, Python {machine.get('python', '?')}. "
        "Command: `make bench` (or `.venv/bin/python -m bench AREA …` for one area).",
        "",
        "| area | figures | measured (UTC) | command |",
        "|---|---|---|---|",
    ]
    by_area: dict[str, list[str]] = {}
    for key, value in figures.items():
        if not DETAIL.match(key):
            area, name = key.split(".", 1)
            by_area.setdefault(area, []).append(f"`{name}` {_value(value)}")
    for area, items in by_area.items():
        info = areas.get(area, {})
        when = info.get("date", "?").replace("T", " ").removesuffix("+00:00")
        lines.append(f"| {area} | {' · '.join(items)} | {when} | `{info.get('command', '?')}` |")
    return "\n".join(lines)


def update(doc: Path = DOC) -> bool:
    """Rewrite the summary block of ``doc``; False when the markers are missing."""
    if not doc.is_file():
        return False
    text = doc.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{render()}\n{END}{tail}")
    return True


if __name__ == "__main__":
    print("updated" if update() else f"no {START} … {END} block in {DOC}")
