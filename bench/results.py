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


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (all its threads), from
    /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of process ``pid`` and its children, those alive now and those it reaped
    (PostgreSQL: the postmaster and its backends, a pool's closed connections included);
    None once ``pid`` is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime, stime, and cutime, cstime: the children it waited for
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
