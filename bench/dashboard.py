"""Dashboard benchmark: the stats endpoint's latency with a million referrals in the database.

In one run on this machine: embedded PostgreSQL in a temporary directory (or
``BENCH_DASHBOARD_DATABASE_URL``: a server of your own; a new database is created in it), the
rewards schema migrated, then one programme filled with ``BENCH_DASHBOARD_REFERRALS``
(1,000,000) referrals over 90 days ending today:

* ``hourly_stats``: one row per referral, spread over 5,000 referral codes, 6 channels
  and the 2,160 hours of the 90 days (each code in 200 distinct hours), every row with 1 to 40
  clicks, one conversion, attributed (19 in 20; the rest rejected with a reason), revenue;
* ``rewards``: one referrer reward per attributed referral, created an hour after its
  conversion, statuses mixed (approved, pending, in review, rejected, reversed);
* 5,000 referrers, each with its code.

Rows are generated inside PostgreSQL (``INSERT … SELECT generate_series``). The hourly rows
go in hour by hour, oldest first, through the table's real triggers, so every roll-up the
stats endpoint reads (daily by channel, code and rejection reason; the code spans of
migration 0005) is built, and laid out on disk, as the stats consumer would build it over
90 days. The rewards go in with their triggers off and their roll-ups are then built by
migration 0004's backfill statements (the same sums; the stats endpoint reads only those).
The run checks the endpoint's totals against ``hourly_stats`` itself. ``VACUUM ANALYZE``
follows, as autovacuum would.

Then the real admin API (console script ``rewards api``, one uvicorn worker) answers, one
request at a time from this process, alternating: ``GET /v1/programs/{id}/stats`` for the
last 30 days and for the last 90 days (``BENCH_DASHBOARD_REQUESTS``, 200 in all, after 20
warm-up requests), the dashboard's review-queue read, and ``GET /readyz`` (one database round
trip through the same server and pool) as the baseline of the same run.

Figures: ``dashboard.stats_p95_ms`` (both ranges; target < 100), ``dashboard.stats_30d_p95_ms``,
``dashboard.stats_90d_p95_ms``, ``dashboard.stats_p50_ms``, ``dashboard.queue_p95_ms``,
``dashboard.baseline_p95_ms``, ``dashboard.stats_ratio`` (stats p95 / baseline p95),
``dashboard.referrals``, ``dashboard.load_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.net import free_port
from referral_devstack.postgres import EmbeddedPostgres, with_database
from referral_kit.migrations import migrate
from rich.console import Console

from .results import record

COMMAND = "make bench"
REFERRALS = int(os.environ.get("BENCH_DASHBOARD_REFERRALS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_DASHBOARD_REQUESTS", "200"))
WARMUP = 20
CODES = 5000
DAYS = 90
TARGET_P95_MS = 100.0
TOKEN = "bench-admin-token"  # noqa: S105 - a throwaway server on a free port
ROOT = Path(__file__).resolve().parent.parent
console = Console()

# One referral per row: code g % 5000 in its (g / 5000)-th hour slot, slots spread over the
# 2,160 hours by a stride prime to 2,160 so no code repeats an hour. Loaded a day at a time
# ($4 = first slot of the day), in hour order, through the triggers.
HOURLY = """
INSERT INTO hourly_stats (program_id, code, channel, hour, clicks, conversions, attributed,
                          rejected, revenue, version, updated_at)
SELECT $1, 'C' || lpad((g % {codes})::text, 5, '0'),
       (ARRAY['email', 'whatsapp', 'copy', 'sms', 'facebook', 'x'])[1 + (g * 7 % 11) % 6],
       $2::timestamptz + slot * interval '1 hour',
       1 + (g * 31 % 40), 1,
       CASE WHEN g % 20 = 0 THEN 0 ELSE 1 END,
       CASE WHEN g % 20 = 0
            THEN jsonb_build_object((ARRAY['duplicate', 'self_referral', 'outside_window',
                                           'existing_customer'])[1 + g / 20 % 4], 1)
            ELSE '{{}}'::jsonb END,
       CASE WHEN g % 20 = 0 THEN 0 ELSE 1500 + (g * 7919 % 20000) END,
       1, now()
FROM generate_series(0::bigint, $3::bigint - 1) AS g,
     LATERAL (SELECT ((g / {codes}) * 977 + (g % {codes}) * 13) % ({days} * 24) AS slot) s
WHERE slot >= $4 AND slot < $4 + 24
ORDER BY slot, g
"""

REWARDS = """
INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id, kind, amount,
                     currency, status, available_at, recipient_id, recipient_email,
                     order_amount, channel, source_event_id, created_at, updated_at,
                     original_amount, reward_basis)
SELECT 'rwd_b' || h.n, h.program_id, 'ref_' || h.code, 'referrer', 'order-' || h.n, 'cash',
       1000, 'EUR',
       (ARRAY['approved', 'approved', 'approved', 'approved', 'approved', 'approved',
              'approved', 'pending', 'pending', 'in_review', 'rejected', 'reversed'])
              [1 + h.n % 12],
       h.hour + interval '15 days', 'ref_' || h.code, lower(h.code) || '@bench.example',
       h.revenue, h.channel, 'evt-' || h.n, h.hour + interval '1 hour',
       h.hour + interval '1 hour', 1000, 'flat'
FROM (SELECT row_number() OVER () AS n, * FROM hourly_stats
      WHERE program_id = $1 AND attributed > 0) AS h
WHERE h.hour + interval '1 hour' <= now()
"""


def _reward_backfill() -> list[str]:
    """Migration 0004's statements that build the reward roll-ups from existing rows."""
    sql = (ROOT / "services" / "rewards" / "src" / "rewards" / "migrations"
           / "0004_reversals_and_stats.sql").read_text()
    tail = sql.split("-- Existing rows enter the roll-ups once", 1)[1].split("\n", 1)[1]
    code = "\n".join(line for line in tail.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in code.split(";") if s.strip()]
    assert statements and all(s.upper().startswith("INSERT") for s in statements), statements
    return [s for s in statements if "FROM hourly_stats" not in s]


async def load(dsn: str) -> tuple[str, int, float]:
    """Fill the database; returns (programme id, hourly rows, seconds)."""
    started = time.monotonic()
    await migrate(dsn, schema="rewards", package="rewards")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "rewards,public"})
    try:
        pid = "prg_bench"
        # The last 2,160 hours up to the current one: all inside the last 90 days.
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=DAYS * 24 - 1)
        await conn.execute(
            "INSERT INTO programs (id, name, landing_url, currency, locale, publishable_key,"
            " secret_key_hash) VALUES ($1, 'Bench shop', 'https://bench.example/', 'EUR', 'en',"
            " 'pk_bench', 'bench-hash')", pid)
        await conn.execute(
            "INSERT INTO referrers (id, program_id, external_id, email, name, code)"
            " SELECT 'ref_C' || lpad(n::text, 5, '0'), $1, 'cust-' || n,"
            " 'c' || lpad(n::text, 5, '0') || '@bench.example', 'Referrer ' || n,"
            " 'C' || lpad(n::text, 5, '0') FROM generate_series(0, $2 - 1) AS n", pid, CODES)
        console.print(f"  {REFERRALS:,} hourly rows through the roll-up triggers, a day at "
                      "a time …")
        hourly = HOURLY.format(codes=CODES, days=DAYS)
        for day in range(DAYS):
            await conn.execute(hourly, pid, start, REFERRALS, day * 24)
            if day % 15 == 14:
                console.print(f"    {day + 1} days in {time.monotonic() - started:.0f} s")
        console.print("  their rewards (triggers off), then migration 0004's reward roll-ups …")
        await conn.execute("ALTER TABLE rewards DISABLE TRIGGER USER")
        await conn.execute(REWARDS, pid)
        await conn.execute("ALTER TABLE rewards ENABLE TRIGGER USER")
        for statement in _reward_backfill():
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")
        rows = await conn.fetchval("SELECT count(*) FROM hourly_stats")
        return pid, rows, time.monotonic() - started
    finally:
        await conn.close()


async def raw_totals(dsn: str, pid: str, first: str, last: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "rewards,public"})
    try:
        row = await conn.fetchrow(
            "SELECT sum(clicks), sum(attributed), sum(revenue) FROM hourly_stats"
            " WHERE program_id = $1 AND (hour AT TIME ZONE 'UTC')::date BETWEEN $2 AND $3",
            pid, datetime.fromisoformat(first).date(), datetime.fromisoformat(last).date())
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        await conn.close()


@contextlib.contextmanager
def database(workdir: Path) -> Iterator[str]:
    if server_dsn := os.environ.get("BENCH_DASHBOARD_DATABASE_URL"):
        name = f"bench_dashboard_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(server_dsn, f'CREATE DATABASE "{name}"'))
        try:
            yield with_database(server_dsn, name)
        finally:
            asyncio.run(_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    server = EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True).start()
    try:
        yield server.uri
    finally:
        server.stop()


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def rewards_api(dsn: str, workdir: Path) -> Iterator[str]:
    broker = EmbeddedBroker.on_free_port(log_path=workdir / "broker.log")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "ADMIN_TOKEN": TOKEN, "ENVIRONMENT": "test",
           "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **CLIENT_ENV,
           "TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}.", "REWARDS_PORT": str(port),
           "LOG_LEVEL": "WARNING", "LOG_FORMAT": "console"}
    log = open(workdir / "rewards-api.log", "wb")  # handed to the child
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "rewards"), "api"], env=env,  # noqa: S603
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("rewards api exited: "
                                   + (workdir / "rewards-api.log").read_text())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("rewards api did not become ready in 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        broker.stop()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, pid: str) -> dict[str, list[float]]:
    today = datetime.now(UTC).date()
    ranges = {"30d": ((today - timedelta(days=29)).isoformat(), today.isoformat()),
              "90d": ((today - timedelta(days=DAYS - 1)).isoformat(), today.isoformat())}
    timings: dict[str, list[float]] = {"30d": [], "90d": [], "queue": [], "baseline": []}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        def timed(path: str, params: dict[str, str] | None = None) -> float:
            began = time.perf_counter()
            response = client.get(path, params=params)
            elapsed = (time.perf_counter() - began) * 1000
            response.raise_for_status()
            return elapsed

        for n in range(WARMUP + REQUESTS):
            key = "30d" if n % 2 == 0 else "90d"
            first, last = ranges[key]
            stats_ms = timed(f"/v1/programs/{pid}/stats", {"from": first, "to": last})
            queue_ms = timed(f"/dashboard/api/programs/{pid}/review-queue")
            base_ms = timed("/readyz")
            if n >= WARMUP:
                timings[key].append(stats_ms)
                timings["queue"].append(queue_ms)
                timings["baseline"].append(base_ms)
        answer = client.get(f"/v1/programs/{pid}/stats",
                            params={"from": ranges["90d"][0], "to": ranges["90d"][1]}).json()
    timings["check"] = [answer["clicks"], answer["attributed"], answer["revenue"]]
    timings["range"] = list(ranges["90d"])  # type: ignore[list-item]
    return timings


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        with database(workdir) as dsn:
            console.print(f"loading {REFERRALS:,} referrals over {CODES:,} codes and {DAYS} days")
            pid, rows, load_seconds = asyncio.run(load(dsn))
            console.print(f"  loaded in {load_seconds:.0f} s")
            with rewards_api(dsn, workdir) as url:
                console.print(f"timing {REQUESTS} stats requests (30 and 90 days, alternating)")
                timings = measure(url, pid)
            first, last = timings.pop("range")  # type: ignore[misc]
            expected = asyncio.run(raw_totals(dsn, pid, first, last))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    got = tuple(int(v) for v in timings.pop("check"))
    if got != expected:
        console.print(f"[red]the endpoint's 90-day totals {got} differ from hourly_stats' "
                      f"{expected}[/red]")
        return 1
    both = timings["30d"] + timings["90d"]
    figures: dict[str, float | int] = {
        "dashboard.stats_p95_ms": round(p(both, 0.95), 2),
        "dashboard.stats_p50_ms": round(statistics.median(both), 2),
        "dashboard.stats_30d_p95_ms": round(p(timings["30d"], 0.95), 2),
        "dashboard.stats_90d_p95_ms": round(p(timings["90d"], 0.95), 2),
        "dashboard.queue_p95_ms": round(p(timings["queue"], 0.95), 2),
        "dashboard.baseline_p95_ms": round(p(timings["baseline"], 0.95), 2),
        "dashboard.referrals": rows,
        "dashboard.load_seconds": round(load_seconds, 1),
    }
    figures["dashboard.stats_ratio"] = round(
        figures["dashboard.stats_p95_ms"] / max(figures["dashboard.baseline_p95_ms"], 0.01), 2)
    record(figures, command=COMMAND if len(sys.argv) < 2
           else ".venv/bin/python -m bench dashboard")
    for key, value in figures.items():
        console.print(f"  {key:<30} {value:>12,}")
    p95 = figures["dashboard.stats_p95_ms"]
    console.print(f"stats p95 {p95:.1f} ms with {rows:,} referrals (target < "
                  f"{TARGET_P95_MS:g} ms: {'met' if p95 < TARGET_P95_MS else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
