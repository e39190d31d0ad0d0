"""Fault injection against a local stack of real processes, ending in an exact oracle check.

The harness starts its own embedded broker, PostgreSQL and SMTP sink (so it may pause or stop
them without disturbing other tests) and every service as an OS process on free ports. A load
driver posts conversions through the tracker's HTTP API the way a shop's server would: it
retries 503s and broken connections with the same ``conversion_id`` until it gets a 202, and
only the conversions answered 202 (``accepted`` or ``duplicate``) enter the oracle. Faults run
concurrently with the load; afterwards the stack must converge, unattended, on exactly:
one referrer reward per acknowledged conversion (right referrer, right amount), ledger/reward
sums per referrer, and one email per reward (no duplicates by Message-ID either).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.mailcatcher import MailCatcher
from referral_devstack.postgres import EmbeddedPostgres, with_database
from referral_events import TopicRegistry
from referral_kit.kafka import ensure_topics

from tests.support import ServiceProcess, eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "artifacts" / "logs" / "chaos"
REWARD = 1000
FRAUD_OFF = {name: {"enabled": False} for name in (
    "velocity_per_hour", "same_ip_or_device", "disposable_email", "email_alias",
    "conversion_rate", "blocked_countries")}
SERVICES = ("tracker", "attribution", "rewards-worker", "notifier")


@dataclass
class Stack:
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    smtp: MailCatcher | None = None
    admin_token: str = field(default_factory=lambda: "chaos-" + uuid.uuid4().hex)
    _pgdir: Path | None = None
    restarts: Counter[str] = field(default_factory=Counter)

    # -- infrastructure ------------------------------------------------------------------

    async def start(self, *, attribution_workers: int = 1) -> Stack:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker.on_free_port(log_path=LOGS / f"{self.run_id}-broker.log")
        self._pgdir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.postgres = EmbeddedPostgres(self._pgdir / "pgdata").start()
        self.smtp = MailCatcher(port=free_port()).start()
        database = f"chaos_{self.run_id}"
        conn = await asyncpg.connect(self.postgres.uri)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        prefix = f"c{self.run_id}."
        await ensure_topics(self.broker.bootstrap, TopicRegistry(prefix).all())
        ports = {n: free_port() for n in ("tracker", "rewards", "notifier", "attribution",
                                          "worker")}
        self.env = {
            "ENVIRONMENT": "test", "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            **CLIENT_ENV, "TOPIC_PREFIX": prefix,
            "DATABASE_URL": with_database(self.postgres.uri, database),
            "ADMIN_TOKEN": self.admin_token, "LOG_LEVEL": "INFO", "LOG_FORMAT": "console",
            "TRACKER_PORT": str(ports["tracker"]), "REWARDS_PORT": str(ports["rewards"]),
            "NOTIFIER_PORT": str(ports["notifier"]),
            "ATTRIBUTION_WEB_PORT": str(ports["attribution"]),
            "REWARDS_WORKER_PORT": str(ports["worker"]),
            "REWARDS_TRACKER_PUBLIC_URL": f"http://127.0.0.1:{ports['tracker']}",
            "NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{ports['notifier']}",
            "SMTP_HOST": self.smtp.host, "SMTP_PORT": str(self.smtp.port),
            "TRACKER_RATE_LIMIT_SECRET": "unlimited",
        }
        for service in ("rewards", "notifier"):
            subprocess.run([str(ROOT / ".venv/bin" / service), "migrate"],
                           env={**os.environ, **self.env}, check=True, capture_output=True,
                           timeout=120)
        await self.launch("rewards-api", ["rewards", "api"], ports["rewards"])
        await self.launch("rewards-worker", ["rewards", "worker"], ports["worker"])
        await self.launch("tracker", ["tracker"], ports["tracker"])
        await self.launch("attribution", ["attribution"], ports["attribution"])
        for n in range(1, attribution_workers):
            port = free_port()
            await self.launch(f"attribution-{n + 1}", ["attribution"], port,
                              extra={"ATTRIBUTION_WEB_PORT": str(port)})
        await self.launch("notifier", ["notifier", "run"], ports["notifier"])
        return self

    async def launch(self, name: str, argv: list[str], port: int, *,
                     extra: dict[str, str] | None = None) -> ServiceProcess:
        proc = ServiceProcess(name, [str(ROOT / ".venv/bin" / argv[0]), *argv[1:]],
                              {**self.env, **(extra or {})},
                              LOGS / f"{self.run_id}-{name}.log", port)
        self.procs[name] = proc
        await self._start_until_ready(proc)
        return proc

    async def _start_until_ready(self, proc: ServiceProcess, attempts: int = 4) -> None:
        """Start and wait for /readyz; a Faust worker restarted after a kill -9 may hang in
        SyncGroup until its next restart (FIELD-NOTES): restart it, as a supervisor would."""
        for attempt in range(attempts):
            proc.start()
            try:
                await proc.wait_ready(timeout=60 if attempt == 0 else 45)
                return
            except (AssertionError, RuntimeError):
                if attempt == attempts - 1:
                    raise
                proc.kill()
                self.restarts[proc.name] += 1

    async def kill_and_restart(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill(signal.SIGKILL)
        self.restarts[name] += 1
        await self._start_until_ready(proc)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        if self.smtp:
            with contextlib.suppress(Exception):
                self.smtp.stop()
        if self.broker:
            self.broker.stop()
        if self.postgres:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if self._pgdir:
            shutil.rmtree(self._pgdir, ignore_errors=True)

    async def all_ready(self) -> bool:
        async with httpx.AsyncClient(timeout=3) as client:
            for proc in self.procs.values():
                if (await client.get(proc.url + "/readyz")).status_code != 200:
                    return False
        return True

    # -- the programme under load -------------------------------------------------------

    async def programme(self, referrers: int) -> tuple[dict, list[dict]]:
        url = self.procs["rewards-api"].url
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=15) as admin:
            created = await admin.post("/v1/programs", json={
                "name": "Chaos", "landing_url": "https://shop.example/", "currency": "EUR",
                "hold_period": "P14D", "referrer_reward": {"kind": "cash", "amount": REWARD},
                "fraud": FRAUD_OFF})
            assert created.status_code == 201, created.text
            program = created.json()
            people = []
            for n in range(referrers):
                enrolled = await admin.post(f"/v1/programs/{program['id']}/referrers", json={
                    "external_id": f"ref-{n}", "email": f"ref{n}.{self.run_id}@example.com",
                    "name": f"Referrer {n}"})
                assert enrolled.status_code == 201, enrolled.text
                people.append({**enrolled.json(), "email": f"ref{n}.{self.run_id}@example.com"})
        async with httpx.AsyncClient(base_url=self.procs["tracker"].url, timeout=5) as web:
            for person in people:
                await eventually(lambda p=person: _redirects(web, p["code"]), timeout=60,
                                 message="the tracker never learnt the codes")
        return program, people


async def _redirects(web: httpx.AsyncClient, code: str) -> bool:
    return (await web.head(f"/r/{code}")).status_code == 302


@dataclass
class Driver:
    """Posts ``events`` conversions through the tracker; keeps the oracle from the 202s."""

    stack: Stack
    secret_key: str
    referrers: list[dict]
    events: int
    rate: float = 200.0  # conversions per second: the run lasts events/rate, faults fall in it
    concurrency: int = 16
    acknowledged: dict[str, str] = field(default_factory=dict)  # conversion id → referrer id
    retries: int = 0
    sent: int = 0

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(self.events):
            queue.put_nowait(n)
        self._start = time.monotonic()
        url = self.stack.procs["tracker"].url
        async with httpx.AsyncClient(base_url=url, timeout=10, headers={
                "Authorization": f"Bearer {self.secret_key}"}) as web:
            await asyncio.gather(*(self._worker(web, queue) for _ in range(self.concurrency)))

    async def _worker(self, web: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        while True:
            try:
                n = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            due = self._start + n / self.rate  # the shop's pace, not a wait for an effect
            if (early := due - time.monotonic()) > 0:
                await asyncio.sleep(early)
            referrer = self.referrers[n % len(self.referrers)]
            conversion_id = f"o-{self.stack.run_id}-{n}"
            body = {"conversion_id": conversion_id, "code": referrer["code"],
                    "customer": {"id": f"cust-{self.stack.run_id}-{n}", "is_new": True},
                    "amount": 5000, "currency": "EUR"}
            deadline = time.monotonic() + 300
            while True:
                try:
                    answer = await web.post("/v1/conversions", json=body)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    assert answer.json()["status"] in ("accepted", "duplicate"), answer.text
                    self.acknowledged[conversion_id] = referrer["id"]
                    break
                if answer is not None and answer.status_code not in (502, 503, 504, 429):
                    raise AssertionError(f"{answer.status_code}: {answer.text}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{conversion_id} never acknowledged")
                self.retries += 1
                await asyncio.sleep(0.2)  # a client's back-off before retrying
            self.sent += 1


async def at_progress(driver: Driver, fraction: float) -> None:
    """Wait until the driver has had ``fraction`` of its events acknowledged."""
    while driver.sent < driver.events * fraction:
        await asyncio.sleep(0.05)


# -- the oracle --------------------------------------------------------------------------

@dataclass
class Verdict:
    acknowledged: int
    rewards: int
    duplicate_rewards: int
    missing_rewards: int
    wrong_rewards: int
    emails: int
    duplicate_emails: int
    missing_emails: int
    ledger_ok: bool
    healthy: bool
    seconds: float
    restarts: dict[str, int]
    retries: int
    diagnosis: dict[str, int] = field(default_factory=dict)
    resent_same_message_id: int = 0

    @property
    def passed(self) -> bool:
        return (self.missing_rewards == self.duplicate_rewards == self.wrong_rewards == 0
                and self.duplicate_emails == self.missing_emails == 0 and self.ledger_ok
                and self.healthy)


async def verify(stack: Stack, driver: Driver, program: dict, *, timeout: float) -> Verdict:
    start = time.monotonic()
    expected = driver.acknowledged
    per_referrer = Counter(expected.values())
    emails = {r["id"]: r["email"] for r in driver.referrers}

    async def rewards() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            return await conn.fetch(
                "SELECT conversion_id, referrer_id, beneficiary, amount FROM rewards.rewards"
                " WHERE program_id = $1", program["id"])
        finally:
            await conn.close()

    def mail_count() -> int:
        # Counted as they arrive: scanning every stored message's To header on each poll
        # took seconds at 20,000 emails, and the SMTP sink (a thread of this process)
        # starved, so the notifier crawled at 4 emails/s.
        return sum(stack.smtp.handler.received(e) for e in emails.values())

    async def settled() -> bool:
        rows = await rewards()
        return len({r["conversion_id"] for r in rows}) >= len(expected) and \
            mail_count() >= len(expected)

    with contextlib.suppress(AssertionError):
        await eventually(settled, timeout=timeout, interval=0.5)
    # Let anything still in flight arrive: quiet when two reads 3 s apart agree.
    previous = None
    while True:
        now = (len(await rewards()), mail_count())
        if now == previous:
            break
        previous = now
        await asyncio.sleep(3)
    rows = await rewards()
    by_conversion = Counter(r["conversion_id"] for r in rows)
    wrong = sum(1 for r in rows if r["conversion_id"] in expected and (
        r["referrer_id"] != expected[r["conversion_id"]] or r["amount"] != REWARD
        or r["beneficiary"] != "referrer"))
    wrong += sum(1 for c in by_conversion if c not in expected)  # a reward nobody earned
    sums = Counter()
    for r in rows:
        sums[r["referrer_id"]] += r["amount"]
    ledger_ok = all(sums[ref] == REWARD * n for ref, n in per_referrer.items())
    mails = {ref: stack.smtp.handler.to(addr) for ref, addr in emails.items()}
    # Distinct emails per referrer by Message-ID: a copy re-sent after a kill -9 between the
    # SMTP accept and the `sent` write carries the same Message-ID (docs/notifications.md) and
    # is counted apart, as a resend, not as a second email.
    distinct = {ref: {m["Message-ID"] for m in ms} for ref, ms in mails.items()}
    duplicate_emails = sum(max(0, len(ids) - per_referrer[ref]) for ref, ids in distinct.items())
    resent = sum(len(ms) for ms in mails.values()) - sum(len(i) for i in distinct.values())
    missing_emails = sum(max(0, per_referrer[ref] - len(ids)) for ref, ids in distinct.items())
    healthy = False
    with contextlib.suppress(AssertionError):
        healthy = bool(await eventually(stack.all_ready, timeout=60, interval=1))
    missing = [c for c in expected if c not in by_conversion]
    diagnosis: Counter[str] = Counter()
    if missing:
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            decided = dict(await conn.fetch(
                "SELECT conversion_id, outcome || ':' || coalesce(reason, '')"
                " FROM rewards.referral_decisions"
                " WHERE conversion_id = ANY($1::text[])", missing))
        finally:
            await conn.close()
        published = await _on_topic(stack, missing)
        for c in missing:
            diagnosis[f"decision={decided.get(c, '-')}, on conversions topic="
                      f"{c in published}"] += 1
    return Verdict(
        diagnosis=dict(diagnosis), resent_same_message_id=resent,
        acknowledged=len(expected), rewards=len(rows),
        duplicate_rewards=sum(n - 1 for n in by_conversion.values() if n > 1),
        missing_rewards=sum(1 for c in expected if c not in by_conversion),
        wrong_rewards=wrong, emails=sum(len(m) for m in mails.values()),
        duplicate_emails=duplicate_emails, missing_emails=missing_emails,
        ledger_ok=ledger_ok, healthy=healthy, seconds=round(time.monotonic() - start, 1),
        restarts=dict(stack.restarts), retries=driver.retries)


async def _on_topic(stack: Stack, wanted: list[str]) -> set[str]:
    from aiokafka import AIOKafkaConsumer
    from referral_events import decode

    consumer = AIOKafkaConsumer(f"{stack.env['TOPIC_PREFIX']}referral.conversions",
                                bootstrap_servers=stack.broker.bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: set[str] = set()
    try:
        idle = 0
        while idle < 5:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for record in records:
                    cid = getattr(decode(record.value).data, "conversion_id", None)
                    if cid in wanted:
                        found.add(cid)
    finally:
        await consumer.stop()
    return found


# -- scenarios ---------------------------------------------------------------------------

Fault = Callable[[Stack, Driver], Awaitable[None]]


def kill_each(victims: tuple[str, ...] = SERVICES, seed: int | None = None) -> Fault:
    """kill -9 each victim once at a random point of the run (each on its own clock, so the
    kills and restarts overlap as they would), then restart it."""
    async def fault(stack: Stack, driver: Driver) -> None:
        rng = random.Random(seed)

        async def one(victim: str, point: float) -> None:
            await at_progress(driver, point)
            await stack.kill_and_restart(victim)

        await asyncio.gather(*(one(v, rng.uniform(0.1, 0.7)) for v in victims))
    return fault


def broker_paused(seconds: float = 10) -> Fault:
    async def fault(stack: Stack, driver: Driver) -> None:
        await at_progress(driver, 0.3)
        stack.broker.pause()
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            stack.broker.resume()
    return fault


def postgres_stopped(seconds: float = 10) -> Fault:
    async def fault(stack: Stack, driver: Driver) -> None:
        await at_progress(driver, 0.3)
        pids = _postgres_pids(stack.postgres.data_dir)
        for pid in pids:  # SIGSTOP every backend: the server neither answers nor forgets
            os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
    return fault


def _postgres_pids(data_dir: Path) -> list[int]:
    master = int((data_dir / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                         text=True).stdout.split()
    return [master, *map(int, out)]


def smtp_down(seconds: float = 30) -> Fault:
    async def fault(stack: Stack, driver: Driver) -> None:
        await at_progress(driver, 0.2)
        stack.smtp.stop()
        try:
            await asyncio.sleep(seconds)
        finally:
            stack.smtp.start()
    return fault


def attribution_rebalance() -> Fault:
    """A second attribution worker joins (a rebalance starts); one is killed during it."""
    async def fault(stack: Stack, driver: Driver) -> None:
        await at_progress(driver, 0.25)
        port = free_port()
        proc = ServiceProcess("attribution-2", [str(ROOT / ".venv/bin/attribution")],
                              {**stack.env, "ATTRIBUTION_WEB_PORT": str(port)},
                              LOGS / f"{stack.run_id}-attribution-2.log", port)
        stack.procs["attribution-2"] = proc
        proc.start()
        await asyncio.sleep(2)  # mid-rebalance: the newcomer has joined, not yet settled
        await stack.kill_and_restart("attribution")
        try:
            await proc.wait_ready(timeout=60)
        except (AssertionError, RuntimeError):  # hung in SyncGroup: restart it, once more
            proc.kill()
            stack.restarts[proc.name] += 1
            await stack._start_until_ready(proc)
    return fault


SCENARIOS: dict[str, Fault] = {
    "kill -9 each service": kill_each(),
    "broker paused 10 s": broker_paused(10),
    "PostgreSQL stopped 10 s": postgres_stopped(10),
    "SMTP down 30 s": smtp_down(30),
    "2 attribution workers, one killed in a rebalance": attribution_rebalance(),
}


async def run_scenario(name: str, fault: Fault, *, events: int, referrers: int = 8,
                       rate: float = 200.0, timeout: float = 300) -> Verdict:
    stack = Stack()
    try:
        await stack.start()
        program, people = await stack.programme(referrers)
        driver = Driver(stack, program["secret_key"], people, events, rate=rate)
        load = asyncio.create_task(driver.run())
        chaos = asyncio.create_task(fault(stack, driver))
        await asyncio.gather(load, chaos)
        return await verify(stack, driver, program, timeout=timeout)
    finally:
        stack.stop()


def table(results: dict[str, Verdict], events: int) -> str:
    lines = [f"Events per scenario: {events}", "",
             "| scenario | acked | rewards | missing | duplicate | wrong | emails | dup. "
             "emails | resent (same Message-ID) | missing emails | sums | healthy | "
             "restarts | driver retries | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in results.items():
        lines.append(
            f"| {name} | {v.acknowledged} | {v.rewards} | {v.missing_rewards} | "
            f"{v.duplicate_rewards} | {v.wrong_rewards} | {v.emails} | {v.duplicate_emails} | "
            f"{v.resent_same_message_id} | {v.missing_emails} | "
            f"{'exact' if v.ledger_ok else 'WRONG'} | "
            f"{'yes' if v.healthy else 'NO'} | "
            f"{', '.join(f'{k} {n}' for k, n in sorted(v.restarts.items())) or '-'} | "
            f"{v.retries} | {'PASS' if v.passed else 'FAIL'} |")
    return "\n".join(lines)
