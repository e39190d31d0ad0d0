"""The figures of the last `make bench`: ``bench/results/latest.json`` holds flat keys with
numbers only (``tracker.ratio``…); when and where they were measured goes to
``latest.meta.json`` next to it."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.json"
META = RESULTS / "latest.meta.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str | int]:
    return {"cores": os.cpu_count() or 0, "cpu": cpu_model(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def _stat(path: Path) -> list[str] | None:
    """The fields of a /proc/<pid>/stat after the command name (field 3 on), or None once
    the process is gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _seconds(ticks: list[str]) -> float:
    return sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (all its threads), from
    /proc; None once it is gone."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return None if fields is None else _seconds(fields[11:13])


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of process ``pid`` and its children, those alive now and those it reaped
    (PostgreSQL: the postmaster and its backends, a pool's closed connections included);
    None once ``pid`` is gone."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    if fields is None:
        return None
    total = _seconds(fields[11:15])  # utime, stime, and cutime, cstime: the children it reaped
    for stat in Path("/proc").glob("[0-9]*/stat"):
        child = _stat(stat)
        if child is not None and int(child[1]) == pid:
            total += _seconds(child[11:13])
    return total


def load() -> dict[str, float]:
    return json.loads(LATEST.read_text()) if LATEST.is_file() else {}


def record(figures: dict[str, float | int], *, command: str) -> None:
    """Merge ``figures`` (flat keys such as ``tracker.ratio``; numbers) into latest.json and
    note the date, machine and the command that measured them in latest.meta.json."""
    for key, value in figures.items():
        if "." not in key or isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: figures are flat 'area.name' keys with numeric values")
    RESULTS.mkdir(parents=True, exist_ok=True)
    merged = {**load(), **figures}
    LATEST.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    meta = json.loads(META.read_text()) if META.is_file() else {}
    area = next(iter(figures)).split(".", 1)[0] if figures else "bench"
    meta["machine"] = machine()
    meta.setdefault("areas", {})[area] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}
    META.write_text(json.dumps(meta, indent=2) + "\n")
