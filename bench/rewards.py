"""Rewards benchmark: how close the real rewards worker (rules, fraud checks, ledger, outbox,
exactly-once) comes to raw batched inserts of the rows it writes, with every reward checked.

In one run on this machine: a fresh embedded PostgreSQL and embedded broker (free port),
the ``rewards`` schema migrated, four programmes and ``REFERRERS`` (2,000) referrers:

* ``shop``: cash 1,000 for the referrer, a 10 % discount (max 2,000) for the friend, the
  standard fraud checks (velocity > 10/h flags, same IP or device flags, disposable email
  flags, email alias rejects), hold P14D;
* ``capped``: cash 500 + 5 % credit expiring after P90D, caps per referrer and day (2,000) and
  lifetime (5,000) and a programme budget that runs out during the run, hold P14D;
* ``tiers``: points 100 → 150 from the 5th referral (bonus 500) → 200 from the 10th (bonus
  1,000), 50 points for the friend, disposable email extends the hold, hold P30D;
* ``percent``: 8 % cash (max 3,000) + a flat 500 discount, blocked countries reject,
  velocity > 5/h flags, hold P7D.

``BENCH_REWARDS_EVENTS`` (20,000) ``ReferralAttributed`` events (keyed by referral code,
skewed so some referrers are hot; 2 % disposable emails, 1 % aliases of the referrer, 1 % the
referrer's own IP, 1 % a blocked country) are published to the attributions topic first.
Then one worker (the real ``rewards worker`` process, ``REWARDS_DECISION_BATCH_SIZE`` =
``BENCH_REWARDS_BATCH``, 500) is started, and the window runs from the first to the last
decision committed (``processed_events`` polled every 25 ms). The worker's outbox relay runs
as in production (it publishes the reward events while the decisions go on).

The baseline then inserts exactly the rows the worker wrote per referral — its decision row,
its reward rows, their outbox rows, its processed_events row — with COPY, ``BATCH`` referrals
per transaction, into a copy of the database as it was before the worker ran (same schema,
same triggers), on one connection.

``BENCH_REWARDS_ROUNDS`` (2) rounds of worker-then-baseline, each on fresh copies of the
database and fresh topics, back to back; the best worker and the best baseline are kept (the
machine is small and shared: the best run is the least disturbed one, on both sides).

Checks (a failure exits non-zero): every event processed once and decided once, exactly one
reward per (conversion, beneficiary, purpose) the programme promises and none missing, one
outbox event per reward, at most one standing bonus per referrer and milestone, no cap or
budget exceeded, and the trigger-kept totals equal to the rewards.

Figures: ``rewards.baseline_per_s``, ``rewards.referrals_per_s`` (target ≥ 2,000),
``rewards.ratio`` (target ≥ 0.3), ``rewards.events``, ``rewards.rewards``, CPU per referral
of the worker process, of PostgreSQL while the worker ran and while the baseline ran
(``rewards.worker_cpu_us``, ``rewards.postgres_cpu_us``, ``rewards.baseline_postgres_cpu_us``),
and the baseline once more with the schema's triggers off
(``rewards.baseline_no_triggers_per_s``: what the trigger-kept totals and roll-ups cost).

``BENCH_REWARDS_PYTHONPATH`` runs the worker from other sources (an older commit's
``services/rewards/src`` and ``libs/*/src``), for before/after figures;
``BENCH_REWARDS_PROFILE=FILE`` records the worker with py-spy (speedscope JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.postgres import EmbeddedPostgres, with_database
from referral_events import (
    AttributionModel,
    Customer,
    ReferralAttributed,
    TopicRegistry,
    derived_id,
    encode,
    new_event,
)
from referral_events.identity import ip_hash
from referral_kit.kafka import ensure_topics
from referral_kit.migrations import migrate
from rich.console import Console

from .results import process_cpu_seconds, record

COMMAND = "make bench"
EVENTS = int(os.environ.get("BENCH_REWARDS_EVENTS", "20000"))
BATCH = int(os.environ.get("BENCH_REWARDS_BATCH", "500"))
ROUNDS = int(os.environ.get("BENCH_REWARDS_ROUNDS", "2"))
REFERRERS = 2000
TARGET_RATE = 2000
TARGET_RATIO = 0.3
SALT = "bench-salt"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCHEMA = "rewards"
WORKER = "rewards-worker"
GRANTED = ("pending", "in_review", "approved")

console = Console()

PROGRAMMES: dict[str, dict[str, Any]] = {
    "shop": {"referrer_reward": {"kind": "cash", "amount": 1000},
             "friend_reward": {"kind": "discount", "percent": 10, "max_amount": 2000}},
    "capped": {"referrer_reward": {"kind": "cash", "amount": 500},
               "friend_reward": {"kind": "credit", "percent": 5, "expires_after": "P90D"},
               "caps": {"per_referrer_day": 2000, "per_referrer_lifetime": 5000,
                        "program_budget": 2_500_000}},
    "tiers": {"referrer_reward": {"kind": "points", "amount": 100},
              "friend_reward": {"kind": "points", "amount": 50},
              "tiers": [{"from_referral": 5, "amount": 150, "bonus": 500},
                        {"from_referral": 10, "amount": 200, "bonus": 1000}],
              "fraud": {"disposable_email": {"action": "extend_hold"}},
              "hold_period": "P30D"},
    "percent": {"referrer_reward": {"kind": "cash", "percent": 8, "max_amount": 3000},
                "friend_reward": {"kind": "discount", "amount": 500},
                "fraud": {"blocked_countries": {"countries": ["KP", "IR"]},
                          "velocity_per_hour": {"max_per_hour": 5}},
                "hold_period": "P7D"},
}
SHARE = {"shop": 0.3, "capped": 0.25, "tiers": 0.25, "percent": 0.2}  # of the referrers


# -- CPU accounting (/proc) -------------------------------------------------------------------

def _children(ppid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by a process and its children alive at the time of reading, plus
    the children that ended meanwhile as far as the parent accounted for them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # + dead kids
        except (OSError, IndexError):
            own = 0.0
        return own + sum(process_cpu_seconds(child) or 0.0 for child in _children(self.pid))


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


# -- the input ------------------------------------------------------------------------------

@dataclass
class World:
    programs: dict[str, Any]  # name → row
    referrers: list[dict[str, Any]]  # id, program, code, email, ip, device


async def create_world(conn: asyncpg.Connection, topics: TopicRegistry) -> World:
    from rewards import programs as programmes
    from rewards.identifiers import new_id, new_referral_code
    from rewards.schemas import ProgramCreate

    rows = {}
    for name, fields in PROGRAMMES.items():
        body = {"name": name, "landing_url": "https://shop.example/", "currency": "EUR",
                **fields}
        rows[name], _ = await programmes.create_program(
            conn=conn, topics=topics, body=ProgramCreate.model_validate(body))
    rng = random.Random(11)  # noqa: S311 - a reproducible workload
    referrers: list[dict[str, Any]] = []
    names = list(SHARE)
    for n in range(REFERRERS):
        program = names[_pick(n / REFERRERS, [SHARE[p] for p in names])]
        ip = f"198.51.{n // 250}.{n % 250}"
        referrers.append({"id": new_id("ref"), "program": program, "code": new_referral_code(),
                          "email": f"ref{n}@example.com", "ip": ip_hash(ip, SALT),
                          "device": f"dev-{n}", "n": n})
    await conn.copy_records_to_table(
        "referrers", schema_name=SCHEMA,
        columns=["id", "program_id", "external_id", "email", "name", "locale", "code",
                 "ip_hashes", "device_ids"],
        records=[(r["id"], rows[r["program"]]["id"], f"cust-{r['n']}", r["email"],
                  f"Referrer {r['n']}", rng.choice(["en", "nl", "de"]), r["code"], [r["ip"]],
                  [r["device"]]) for r in referrers])
    return World(rows, referrers)


def _pick(x: float, shares: list[float]) -> int:
    total = 0.0
    for i, share in enumerate(shares):
        total += share
        if x < total:
            return i
    return len(shares) - 1


def make_events(world: World, count: int) -> list[tuple[bytes, bytes, str]]:
    """(key, value, event id) per referral, in conversion-time order over the last two days;
    referrers drawn with a skew (a few hot ones trip the velocity check)."""
    rng = random.Random(7)  # noqa: S311 - a reproducible workload
    weights = [1.0 / (1 + r["n"] % 400) for r in world.referrers]
    chosen = rng.choices(world.referrers, weights=weights, k=count)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=48)
    step = timedelta(hours=47) / count
    events = []
    for n, referrer in enumerate(chosen):
        program = world.programs[referrer["program"]]
        at = start + step * n
        roll = rng.random()
        email = f"friend{n}@example.org"
        country = rng.choice(["NL", "DE", "BE", "FR", "GB", None])
        ip, device = f"hash-{n}", None
        if roll < 0.02:
            email = f"friend{n}@mailinator.com"
        elif roll < 0.03:
            email = referrer["email"].replace("@", f"+{n}@")
        elif roll < 0.04:
            ip = referrer["ip"]
        elif roll < 0.045:
            device = referrer["device"]
        elif roll < 0.055:
            country = "KP"
        conversion_id = f"order-{n:06d}"
        data = ReferralAttributed(
            program_id=program["id"], conversion_id=conversion_id, referrer_id=referrer["id"],
            code=referrer["code"], channel=rng.choice(["email", "whatsapp", "link"]),
            attribution_model=AttributionModel.LAST_CLICK,
            customer=Customer(id=f"cust-friend-{n}", email=email, is_new=True, country=country),
            amount=rng.randrange(1000, 40_000), currency="EUR", ip_hash=ip, device_id=device,
            converted_at=at, decided_at=at + timedelta(seconds=2))
        event_id = derived_id("attribution", program["id"], conversion_id)
        envelope = new_event(data, source="attribution", id=event_id)
        events.append((referrer["code"].encode(), encode(envelope), event_id))
    return events


async def publish(bootstrap: str, topic: str, events: list[tuple[bytes, bytes, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value, key=key) for key, value, _ in events]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


# -- the worker -----------------------------------------------------------------------------

def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env}
    argv = [str(BIN / "rewards"), "worker"]
    if other := os.environ.get("BENCH_REWARDS_PYTHONPATH"):
        full_env["PYTHONPATH"] = other
        argv = [str(BIN / "python"), "-c", "from rewards.main import app; app()", "worker"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=full_env, cwd=ROOT, stdout=out,  # noqa: S603
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_profiler(pid: int) -> subprocess.Popen[bytes] | None:
    if not (profile := os.environ.get("BENCH_REWARDS_PROFILE")):
        return None
    return subprocess.Popen(  # noqa: S603
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "speedscope",
         "--output", profile, "--rate", "200", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Window:
    seconds: float
    counted: int  # events decided inside the window
    worker_cpu: float
    postgres_cpu: float


async def watch(conn: asyncpg.Connection, proc: subprocess.Popen[bytes], total: int,
                worker: CpuMeter, postgres: CpuMeter, within: float) -> Window:
    """From the first to the last decision committed, polling processed_events."""
    deadline = time.monotonic() + within
    query = "SELECT count(*) FROM rewards.processed_events WHERE consumer = $1"
    first: tuple[float, int, float, float] | None = None
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all events decided within {within:.0f}s")
        now = time.monotonic()
        done = await conn.fetchval(query, WORKER)
        if first is None and done:
            first = (now, done, worker.read(), postgres.read())
        if done >= total:
            assert first is not None
            return Window(now - first[0], total - first[1], worker.read() - first[2],
                          postgres.read() - first[3])
        await asyncio.sleep(0.025)


# -- the baseline ---------------------------------------------------------------------------

@dataclass
class Written:
    """The rows the worker wrote, grouped per referral in decision order."""

    order: list[str]  # event ids
    decisions: dict[str, tuple[Any, ...]]
    rewards: dict[str, list[tuple[Any, ...]]]
    outbox: dict[str, list[tuple[Any, ...]]]
    processed: dict[str, tuple[Any, ...]]
    reward_columns: list[str]
    decision_columns: list[str]


async def written_rows(conn: asyncpg.Connection, rewards_topic: str) -> Written:
    decisions = await conn.fetch("SELECT * FROM referral_decisions ORDER BY decided_at")
    rewards = await conn.fetch("SELECT * FROM rewards ORDER BY created_at, id")
    processed = await conn.fetch(
        "SELECT event_id, consumer, processed_at FROM processed_events WHERE consumer = $1",
        WORKER)
    outbox = await conn.fetch("SELECT topic, key, value, created_at FROM outbox WHERE topic = $1"
                              " ORDER BY id", rewards_topic)
    by_reward: dict[str, str] = {}
    grouped: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for reward in rewards:
        by_reward[reward["id"]] = reward["source_event_id"]
        grouped[reward["source_event_id"]].append(tuple(reward))
    boxed: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in outbox:
        reward_id = json.loads(row["value"])["data"]["reward_id"]
        boxed[by_reward[reward_id]].append(tuple(row))
    return Written(order=[d["event_id"] for d in decisions],
                   decisions={d["event_id"]: tuple(d) for d in decisions},
                   rewards=grouped, outbox=boxed,
                   processed={p["event_id"]: tuple(p) for p in processed},
                   reward_columns=list(rewards[0].keys()) if rewards else [],
                   decision_columns=list(decisions[0].keys()) if decisions else [])


async def baseline(dsn: str, written: Written, postgres: CpuMeter, *,
                   triggers: bool = True) -> tuple[float, float]:
    """Referrals per second and PostgreSQL CPU seconds, COPYing the written rows in
    (``triggers=False``: with the schema's triggers off, to see what they cost)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET search_path TO {SCHEMA}")
        if not triggers:
            await conn.execute("SET session_replication_role = replica")
        cpu = postgres.read()
        started = time.perf_counter()
        for at in range(0, len(written.order), BATCH):
            ids = written.order[at:at + BATCH]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "referral_decisions", columns=written.decision_columns,
                    records=[written.decisions[i] for i in ids])
                await conn.copy_records_to_table(
                    "rewards", columns=written.reward_columns,
                    records=[r for i in ids for r in written.rewards.get(i, ())])
                await conn.copy_records_to_table(
                    "outbox", columns=["topic", "key", "value", "created_at"],
                    records=[r for i in ids for r in written.outbox.get(i, ())])
                await conn.copy_records_to_table(
                    "processed_events", columns=["event_id", "consumer", "processed_at"],
                    records=[written.processed[i] for i in ids])
        elapsed = time.perf_counter() - started
        return len(written.order) / elapsed, postgres.read() - cpu
    finally:
        await conn.close()


# -- the checks -----------------------------------------------------------------------------

async def check(conn: asyncpg.Connection, world: World, events: list[tuple[bytes, bytes, str]],
                rewards_topic: str) -> list[str]:
    problems: list[str] = []
    ids = [event_id for _, _, event_id in events]
    processed = await conn.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = ANY($2)",
        WORKER, ids)
    if processed != len(ids):
        problems.append(f"{len(ids) - processed} events never processed")
    decided = await conn.fetchval("SELECT count(*) FROM referral_decisions")
    if decided != len(ids):
        problems.append(f"{decided} decisions for {len(ids)} referrals")
    sides = {p["id"]: ["referrer"] + (["friend"] if PROGRAMMES[name].get("friend_reward")
                                      else [])
             for name, p in world.programs.items()}
    expected = Counter({(p, side): 0 for p, s in sides.items() for side in s})
    for program_id, in_program in Counter(
            r["program_id"] for r in await conn.fetch("SELECT program_id FROM referral_decisions")
    ).items():
        for side in sides[program_id]:
            expected[(program_id, side)] = in_program
    got = Counter({(r["program_id"], r["beneficiary"]): r["n"] for r in await conn.fetch(
        "SELECT program_id, beneficiary, count(DISTINCT conversion_id) AS n FROM rewards"
        " WHERE purpose = 'referral' GROUP BY 1, 2")})
    for key, n in expected.items():
        if got[key] != n:
            problems.append(f"{key}: {got[key]} conversions rewarded, {n} expected")
    doubles = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM rewards GROUP BY program_id, conversion_id,"
        " beneficiary, purpose HAVING count(*) > 1) d")
    if doubles:
        problems.append(f"{doubles} conversions with two rewards for one side and purpose")
    bonus_doubles = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM rewards WHERE purpose = 'milestone'"
        " AND status = ANY($1) GROUP BY referrer_id, milestone HAVING count(*) > 1) d",
        list(GRANTED))
    if bonus_doubles:
        problems.append(f"{bonus_doubles} milestones paid twice")
    rewards = await conn.fetchval("SELECT count(*) FROM rewards")
    announced = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1",
                                    rewards_topic)
    if announced != rewards:
        problems.append(f"{announced} reward events in the outbox for {rewards} rewards")
    capped = world.programs["capped"]
    caps = PROGRAMMES["capped"]["caps"]
    worst = await conn.fetchrow(
        "SELECT max(l) AS lifetime, max(d) AS day FROM ("
        " SELECT referrer_id, sum(day) AS l, max(day) AS d FROM ("
        "  SELECT referrer_id, (created_at AT TIME ZONE 'UTC')::date AS dt, sum(amount) AS day"
        "  FROM rewards WHERE program_id = $1 AND beneficiary = 'referrer' AND status = ANY($2)"
        "  GROUP BY 1, 2) per_day GROUP BY 1) per_referrer", capped["id"], list(GRANTED))
    if (worst["lifetime"] or 0) > caps["per_referrer_lifetime"]:
        problems.append(f"lifetime cap exceeded: {worst['lifetime']}")
    if (worst["day"] or 0) > caps["per_referrer_day"]:
        problems.append(f"day cap exceeded: {worst['day']}")
    spent = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM rewards WHERE program_id = $1 AND status = ANY($2)",
        capped["id"], list(GRANTED))
    if spent > caps["program_budget"]:
        problems.append(f"budget exceeded: {spent}")
    mismatched = await conn.fetchval(
        "SELECT count(*) FROM program_budgets b FULL JOIN (SELECT program_id, sum(amount)"
        "  FILTER (WHERE status = ANY($1)) AS s FROM rewards GROUP BY 1) r USING (program_id)"
        " WHERE coalesce(b.spent, 0) <> coalesce(r.s, 0)", list(GRANTED))
    if mismatched:
        problems.append(f"{mismatched} programme budgets differ from their rewards")
    return problems


# -- the run --------------------------------------------------------------------------------

@dataclass
class Round:
    window: Window
    baseline: tuple[float, float]  # referrals/s, PostgreSQL CPU seconds
    problems: list[str]
    written: Written


async def one_round(n: int, pg: EmbeddedPostgres, broker: EmbeddedBroker, world: World,
                    events: list[tuple[bytes, bytes, str]], work: Path,
                    postgres: CpuMeter) -> Round:
    """A fresh database (copy of the template) and fresh topics: the worker decides every
    event; then the baseline COPYs the rows it wrote into another fresh copy."""
    worker_db, baseline_db = f"bench_worker_{n}", f"bench_baseline_{n}"
    admin = await asyncpg.connect(pg.uri)
    try:
        for name in (worker_db, baseline_db):
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE bench_template")
    finally:
        await admin.close()
    worker_dsn = with_database(pg.uri, worker_db)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = TopicRegistry(prefix)
    await ensure_topics(broker.bootstrap, topics.all())
    await publish(broker.bootstrap, topics.attributions.name, events)
    env = {"DATABASE_URL": worker_dsn, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           **CLIENT_ENV, "TOPIC_PREFIX": prefix,
           "ENVIRONMENT": "local", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "console",
           "IP_HASH_SALT": SALT, "REWARDS_WORKER_PORT": "0",
           "REWARDS_DECISION_BATCH_SIZE": str(BATCH)}
    worker_proc = start_worker(env, work / f"worker-{n}.log")
    try:
        profiler = start_profiler(worker_proc.pid) if n == 1 else None
        conn = await asyncpg.connect(worker_dsn)
        try:
            window = await watch(conn, worker_proc, len(events), CpuMeter(worker_proc.pid),
                                 postgres, within=max(120.0, EVENTS / 50))
        finally:
            await conn.close()
    finally:
        stop_process(worker_proc)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)
    conn = await asyncpg.connect(worker_dsn)
    try:
        await conn.execute(f"SET search_path TO {SCHEMA}")
        problems = await check(conn, world, events, topics.rewards.name)
        written = await written_rows(conn, topics.rewards.name)
    finally:
        await conn.close()
    base = await baseline(with_database(pg.uri, baseline_db), written, postgres)
    console.print(f"round {n}: worker {window.counted:,} referrals in {window.seconds:.2f} s"
                  f" = {window.counted / window.seconds:,.0f}/s; baseline {base[0]:,.0f}/s")
    return Round(window, base, problems, written)


async def run(work: Path) -> int:
    console.print(f"rewards: {EVENTS:,} referrals, {REFERRERS:,} referrers, batch {BATCH}, "
                  f"{ROUNDS} rounds")
    pg = EmbeddedPostgres(work / "pgdata", delete_on_stop=True).start()
    broker = EmbeddedBroker.on_free_port(log_path=work / "broker.log")
    try:
        postgres = CpuMeter(postmaster_pid(work / "pgdata"))
        admin = await asyncpg.connect(pg.uri)
        try:
            await admin.execute("CREATE DATABASE bench_template")
        finally:
            await admin.close()
        template = with_database(pg.uri, "bench_template")
        await migrate(template, schema=SCHEMA, package="rewards")
        from rewards.db import create_pool

        pool = await create_pool(template, min_size=1, max_size=1)
        async with pool.acquire() as conn:
            world = await create_world(conn, TopicRegistry("bench-setup."))
            await conn.execute("DELETE FROM outbox")  # the programmes' registry entries
        await pool.close()
        events = make_events(world, EVENTS)
        rounds = [await one_round(n, pg, broker, world, events, work, postgres)
                  for n in range(1, ROUNDS + 1)]
        best = max(rounds, key=lambda r: r.window.counted / r.window.seconds)
        rate = best.window.counted / best.window.seconds
        base_rate, base_cpu = max(r.baseline for r in rounds)
        admin = await asyncpg.connect(pg.uri)
        try:
            await admin.execute("CREATE DATABASE bench_bare TEMPLATE bench_template")
        finally:
            await admin.close()
        bare_rate, _ = await baseline(with_database(pg.uri, "bench_bare"), best.written,
                                      postgres, triggers=False)
        console.print(f"baseline without triggers {bare_rate:,.0f}/s")
        problems = [f"round {n}: {p}" for n, r in enumerate(rounds, 1) for p in r.problems]
        for problem in problems:
            console.print(f"[red]check failed: {problem}[/red]")
        ratio = rate / base_rate
        window = best.window
        figures: dict[str, float | int] = {
            "rewards.baseline_per_s": round(base_rate, 1),
            "rewards.referrals_per_s": round(rate, 1),
            "rewards.ratio": round(ratio, 3),
            "rewards.events": len(events),
            "rewards.rewards": sum(len(r) for r in best.written.rewards.values()),
            "rewards.worker_cpu_us": round(window.worker_cpu / window.counted * 1e6, 1),
            "rewards.postgres_cpu_us": round(window.postgres_cpu / window.counted * 1e6, 1),
            "rewards.baseline_postgres_cpu_us": round(
                base_cpu / len(best.written.order) * 1e6, 1),
            "rewards.baseline_no_triggers_per_s": round(bare_rate, 1),
        }
        if not os.environ.get("BENCH_REWARDS_PYTHONPATH"):  # other sources: not the record
            record(figures, command=COMMAND)
        for key, value in figures.items():
            console.print(f"{key} = {value}")
        console.print(f"targets: ≥ {TARGET_RATE:,}/s {'met' if rate >= TARGET_RATE else 'MISSED'}"
                      f", ratio ≥ {TARGET_RATIO} {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
        return 1 if problems else 0
    finally:
        broker.stop()
        pg.stop()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-rewards-"))
    try:
        return asyncio.run(run(work))
    finally:
        if os.environ.get("BENCH_REWARDS_KEEP"):
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
