"""Attribution benchmark: how close the real attribution worker comes to the throughput floor
Faust itself sets, with every decision accounted for.

In one run on this machine, on a fresh embedded broker (free port) and with a new topic
prefix per measurement, the same input — ``BENCH_ATTRIBUTION_EVENTS`` (100,000) events, ten
clicks per conversion, 400 referral codes of two programmes (keys spread over the 4
partitions), the registry (programmes and codes) published first; conversions mostly name
the click id of an earlier click, some carry only a code, a few name an unknown code, are
self-referrals, existing customers or resubmissions (duplicates) — goes through:

* ``raw``: an aiokafka consumer group (this process) reading clicks and conversions and
  producing each record to an output topic, a fetched batch at a time, awaiting the acks;
  timed from the first fetched batch (after the group join) to the last ack; median of 3;
* ``floor``: a minimal Faust agent (``python -m bench.attribution floor-worker``: the app's
  Faust settings, concurrency 1) forwarding every event to an output topic;
* ``worker``: the real worker (``.venv/bin/attribution``, tables with changelogs);
* ``two workers``: two such processes in one consumer group.

The Faust processes are started first and the input is published (in ~3 s) only once every
process answers ``/readyz`` (group joined, idle), so start-up and group joins are outside
the timed window. The window runs from the first to the last record those processes wrote
(their output topic; for the worker its decisions and the changelogs of its tables, which
every click and conversion writes to), by the records' timestamps. The end of processing is
detected when every expected decision is on the attributions topic *and* the group's
committed offsets reached the end of every clicks and conversions partition (Faust commits
every ~3 s; that delay is not part of the window).

Then the latency run: a fresh worker, the same mix generated live at 1,000 events/s for
``BENCH_ATTRIBUTION_P99_SECONDS`` (25) s; latency per conversion from the moment it is handed
to the producer to the timestamp of its decision record (stamped by the worker's producer
when it sends the decision); the first 2 s are warm-up.

Every run checks its decisions against the expected set (one deterministic decision id per
conversion event: ``attribution`` ids, ``attribution-duplicate`` ids for resubmissions); a
missing or unexpected decision fails the run, as does a decision whose outcome differs
between one and two workers. Identical re-sent decisions (at-least-once) are reported.

Figures: ``attribution.raw_events_per_s``, ``attribution.faust_floor_events_per_s``,
``attribution.events_per_s``, ``attribution.ratio`` (worker / floor, target ≥ 0.8),
``attribution.two_worker_events_per_s``, ``attribution.two_worker_ratio`` (two / one),
``attribution.faust_floor_cpu_us_per_event``, ``attribution.cpu_us_per_event`` (CPU time of
the Faust processes per event, from publishing to the end: steadier than throughput on a
shared machine), ``attribution.cpu_ratio`` (floor / worker), ``attribution.p50_ms``,
``attribution.p99_ms``, ``attribution.events``. See docs/performance.md, "Attribution".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.net import free_port
from referral_events import (
    AttributionModel,
    ClickRecorded,
    CodeSource,
    ConversionRecorded,
    Customer,
    EventData,
    ProgramEntry,
    ReferralCodeEntry,
    Topic,
    TopicRegistry,
    derived_id,
    encode,
    new_event,
)
from referral_events.identity import email_hash, key_hash
from referral_kit.kafka import ensure_topics
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .results import process_cpu_seconds, record

COMMAND = "make bench"
EVENTS = int(os.environ.get("BENCH_ATTRIBUTION_EVENTS", "100000"))
P99_SECONDS = float(os.environ.get("BENCH_ATTRIBUTION_P99_SECONDS", "25"))
P99_RATE = 1000.0
P99_WARMUP = 2.0
CLICKS_PER_CONVERSION = 10
CODES = 400
PARTITIONS = 4
RAW_REPEATS = 3
STALL_SECONDS = 60.0  # a Faust run that commits nothing new for this long has failed
TARGET_RATIO = 0.8
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: python, attribution
APP_ID = "bench-attribution"

console = Console()


# -- the input ------------------------------------------------------------------------------

@dataclass
class Sent:
    """One event of the input, encoded once."""

    conversion: bool
    key: bytes
    value: bytes


@dataclass
class Expected:
    """What the worker must decide: one decision id per conversion event."""

    decisions: dict[str, str] = field(default_factory=dict)  # decision id → conversion id
    kinds: dict[str, int] = field(default_factory=dict)  # conversion kind → how many


class Mix:
    """The realistic mix, generated deterministically (seeded): ten clicks of popular and
    less popular codes per conversion; a conversion names the click id of a recent click
    (78 %), carries only a code (12 %), names an unknown code (3 %), is a self-referral
    (2 %), an existing customer (2 %), or a resubmission of an earlier order (3 %)."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible workload
        self.codes = [f"BC{n:04d}" for n in range(CODES)]
        self.program_of = {c: ("prg_a" if n % 2 == 0 else "prg_b")
                           for n, c in enumerate(self.codes)}
        # codes are not equally popular (Zipf-like), as referral links never are
        weights = [1 / (rank + 1) ** 0.8 for rank in range(CODES)]
        self.cum = list(itertools.accumulate(weights))
        self.recent_clicks: deque[tuple[str, str]] = deque(maxlen=300)  # (click id, code)
        self.recent_orders: deque[tuple[str, str, str]] = deque(maxlen=500)
        self.n = 0
        self.orders = 0
        self.expected = Expected()

    def registry(self) -> list[tuple[str, EventData]]:
        at = datetime.now(UTC) - timedelta(days=1)
        programs = [
            ProgramEntry(program_id="prg_a", name="Shop A", landing_url="https://a.example/",
                         currency="EUR", publishable_key_hash=key_hash("pk_a"),
                         secret_key_hash=key_hash("sk_a"), version=1, updated_at=at),
            ProgramEntry(program_id="prg_b", name="Shop B", landing_url="https://b.example/",
                         currency="EUR", attribution_window_days=7,
                         attribution_model=AttributionModel.FIRST_CLICK,
                         publishable_key_hash=key_hash("pk_b"),
                         secret_key_hash=key_hash("sk_b"), version=1, updated_at=at),
        ]
        codes = [ReferralCodeEntry(code=c, program_id=self.program_of[c], referrer_id=f"ref_{n}",
                                   referrer_external_id=f"cust-ref-{n}",
                                   referrer_email_hash=email_hash(f"referrer{n}@gmail.com"),
                                   version=1, updated_at=at)
                 for n, c in enumerate(self.codes)]
        return [(e.registry_key(), e) for e in [*programs, *codes]]

    def _code(self) -> str:
        return self.rng.choices(self.codes, cum_weights=self.cum)[0]

    def _token(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=20))

    def next(self, at: datetime) -> tuple[bool, str, EventData]:
        """The next event of the stream, happening at ``at``: (is conversion, key, data)."""
        self.n += 1
        if self.n % (CLICKS_PER_CONVERSION + 1):
            code = self._code()
            click = ClickRecorded(
                click_id=f"clk_{code}_{self._token()}", program_id=self.program_of[code],
                code=code, channel=self.rng.choice(("link", "link", "whatsapp", "email", "qr")),
                utm={"utm_source": "referral", "utm_medium": "share"},
                visitor_hash=f"{self.rng.randrange(30_000):016x}",
                ip_hash=f"{self.rng.getrandbits(128):032x}",
                user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                occurred_at=at)
            self.recent_clicks.append((click.click_id, code))
            return False, code, click
        self.orders += 1
        r = self.rng.random()
        n = self.orders
        customer = Customer(id=f"cust-{n}", email=f"buyer{n}@example.com", is_new=True)
        click_id: str | None = None
        source = CodeSource.CODE
        conversion_id = f"ord-{n}"
        if r < 0.78 and self.recent_clicks:
            kind = "click_id"
            click_id, code = self.rng.choice(self.recent_clicks)
            source = CodeSource.CLICK_ID
        elif r < 0.90:
            kind, code = "code_only", self._code()
        elif r < 0.93:
            kind, code = "unknown_code", f"ZZ{self.rng.randrange(10**6):06d}"
        elif r < 0.95:
            kind, code = "self_referral", self._code()
            ref = self.codes.index(code)
            customer = Customer(id=f"cust-{n}", email=f"Referrer.{ref}+shop@GMail.com",
                                is_new=True)
        elif r < 0.97:
            kind, code = "existing_customer", self._code()
            customer = Customer(id=f"cust-{n}", email=f"buyer{n}@example.com", is_new=False)
        elif self.recent_orders:
            kind = "resubmission"
            _, conversion_id, code = self.rng.choice(self.recent_orders)
        else:
            kind, code = "code_only", self._code()
        program = self.program_of.get(code, "prg_a")
        conversion = ConversionRecorded(
            program_id=program, conversion_id=conversion_id, code=code, code_source=source,
            click_id=click_id, customer=customer, amount=self.rng.randrange(500, 20_000),
            currency="EUR", ip_hash=f"{self.rng.getrandbits(128):032x}",
            device_id=f"dev-{self.rng.randrange(50_000)}", occurred_at=at)
        if kind != "resubmission":
            self.recent_orders.append((program, conversion_id, code))
        self.expected.kinds[kind] = self.expected.kinds.get(kind, 0) + 1
        return True, code, conversion

    def envelope_of(self, conversion: bool, data: EventData, at: datetime
                    ) -> tuple[str | None, bytes]:
        """The encoded envelope and, for a conversion, the decision id it must yield."""
        envelope = new_event(data, source="tracker", time=at,
                             id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
        decision = None
        if conversion:
            assert isinstance(data, ConversionRecorded)
            key = f"{data.program_id}:{data.conversion_id}"
            if data.conversion_id != f"ord-{self.orders}":  # a resubmission: a duplicate
                decision = derived_id("attribution-duplicate", key, envelope.id)
            else:
                decision = derived_id("attribution", data.program_id, data.conversion_id)
            self.expected.decisions[decision] = data.conversion_id
        return decision, encode(envelope)


def make_input(n: int) -> tuple[Mix, list[Sent]]:
    """``n`` events spread over the last ~n * 10 ms (all in the past, all in every window)."""
    mix = Mix()
    start = datetime.now(UTC) - timedelta(milliseconds=10 * n + 60_000)
    events: list[Sent] = []
    for i in range(n):
        at = start + timedelta(milliseconds=10 * i)
        conversion, key, data = mix.next(at)
        _, value = mix.envelope_of(conversion, data, at)
        events.append(Sent(conversion, key.encode(), value))
    return mix, events


# -- broker helpers -------------------------------------------------------------------------

def producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all",
                            linger_ms=linger_ms, max_batch_size=256 * 1024)


async def prepare(bootstrap: str, mix: Mix, *extra: str) -> TopicRegistry:
    """A fresh topic prefix: the platform's topics (+ ``extra`` output topics), registry
    entries published."""
    topics = TopicRegistry(f"b{uuid.uuid4().hex[:8]}.")
    outs = [Topic(f"{topics.prefix}{name}", "code", PARTITIONS, False, (), None)
            for name in extra]
    await ensure_topics(bootstrap, [*topics.all(), *outs])
    p = producer(bootstrap)
    await p.start()
    try:
        futures = [await p.send(topics.registry.name, encode(new_event(e, source="rewards")),
                                key=k.encode()) for k, e in mix.registry()]
        await asyncio.gather(*futures)
    finally:
        await p.stop()
    return topics


async def publish(bootstrap: str, topics: TopicRegistry, events: list[Sent]
                  ) -> tuple[float, dict[TopicPartition, int]]:
    """Send the input in its order, waiting for every ack; returns the seconds it took and
    the end offset of every partition written (from the acks: the embedded broker's
    ListOffsets answers the base offset of the last batch + 1, not the high watermark)."""
    p = producer(bootstrap)
    await p.start()
    started = time.perf_counter()
    ends: dict[TopicPartition, int] = {}
    try:
        for chunk in range(0, len(events), 5000):
            futures = [await p.send(topics.conversions.name if e.conversion
                                    else topics.clicks.name, e.value, key=e.key)
                       for e in events[chunk:chunk + 5000]]
            for meta in await asyncio.gather(*futures):
                tp = TopicPartition(meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    finally:
        await p.stop()
    return time.perf_counter() - started, ends


async def partitions_of(consumer: AIOKafkaConsumer, names: list[str]) -> list[TopicPartition]:
    await consumer.topics()  # refresh metadata
    return [TopicPartition(t, p) for t in names for p in sorted(
        consumer.partitions_for_topic(t) or ())]


async def record_span(bootstrap: str, names: list[str]) -> tuple[float, float]:
    """(first, last record timestamp in s) over the topics ``names``: the first records of
    every partition, and every record from 50 before the reported end on (the reported end
    can lag the real one by a batch, see :func:`publish`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, names)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        consumer.assign(tps)
        first, last = float("inf"), 0.0
        for edge in ("head", "tail"):
            for tp in tps:
                consumer.seek(tp, begin[tp] if edge == "head" else max(begin[tp], end[tp] - 50))
            # every partition with records yields some; the tail is read until nothing more
            # comes for two polls in a row (the writers are done by now)
            pending, idle = {tp for tp in tps if end[tp] > begin[tp]}, 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (pending or (edge == "tail" and idle < 2)):
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                idle = 0 if batches else idle + 1
                for tp, records in batches.items():
                    pending.discard(tp)
                    stamps = [r.timestamp / 1000 for r in records]
                    first, last = min(first, *stamps), max(last, *stamps)
                    if edge == "head":
                        consumer.pause(tp)
            if pending:
                raise RuntimeError(f"could not read {sorted(map(str, pending))}")
            consumer.resume(*tps)
        return first, last
    finally:
        await consumer.stop()


class Decisions:
    """Reads the attributions topic from the beginning, in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[str, str, str | None, float, float]] = []  # id, type,
        # reason, record timestamp (s), received (s)
        self.ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Decisions:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for r in records:
                    doc = json.loads(r.value)
                    self.records.append((doc["id"], doc["type"], doc["data"].get("reason"),
                                         r.timestamp / 1000, now))
                    self.ids.add(doc["id"])

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        return {i: (t.rsplit(".", 1)[-1], reason) for i, t, reason, _, _ in self.records}

    def check(self, expected: Expected) -> tuple[int, int, int]:
        """(missing, unexpected, re-sent) decisions versus the expected set."""
        want = expected.decisions.keys()
        return (len(want - self.ids), len(self.ids - want), len(self.records) - len(self.ids))


async def committed(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> int:
    """How many of the input records (``ends``: end offset per partition) the group has
    committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=list(ends))
        return sum(min(max(offsets[tp].offset, 0), end) if tp in offsets else 0
                   for tp, end in ends.items())
    finally:
        await admin.close()


# -- processes ------------------------------------------------------------------------------

@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (0 once it is gone)."""
        return process_cpu_seconds(self.proc.pid) or 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Worker:
    port = free_port()
    log = workdir / f"{name}.log"
    data = workdir / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env, "ATTRIBUTION_WEB_PORT": str(port),
                "ATTRIBUTION_DATA_DIR": str(data), "BENCH_FLOOR_PORT": str(port),
                "BENCH_FLOOR_DATA": str(data)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=full_env, cwd=ROOT, stdout=out,  # noqa: S603
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(name, proc, port, log)


async def all_ready(workers: list[Worker], within: float = 90.0) -> None:
    """Every worker answers /readyz with 200 twice in a row, 0.5 s apart (group settled)."""
    deadline = time.monotonic() + within
    streak = 0
    async with httpx.AsyncClient(timeout=2) as client:
        while streak < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("workers not ready:\n" + "\n".join(
                    f"--- {w.name} ---\n{w.tail()}" for w in workers))
            ok = True
            for w in workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"{w.name} exited with {w.proc.returncode}:\n{w.tail()}")
                try:
                    r = await client.get(f"http://127.0.0.1:{w.port}/readyz")
                    ok = ok and r.status_code == 200
                except httpx.HTTPError:
                    ok = False
            streak = streak + 1 if ok else 0
            await asyncio.sleep(0.5 if ok else 0.25)


def worker_env(bootstrap: str, topics: TopicRegistry) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, **CLIENT_ENV,
            "TOPIC_PREFIX": topics.prefix, "ATTRIBUTION_APP_ID": APP_ID,
            "ENVIRONMENT": "local", "LOG_LEVEL": "INFO", "LOG_FORMAT": "console"}


# -- the measurements ----------------------------------------------------------------------

async def raw_passthrough(bootstrap: str, mix: Mix, events: list[Sent]) -> list[float]:
    """Consume→produce with plain aiokafka, :data:`RAW_REPEATS` times on one input (a new
    group and output topic each time); events/s of each."""
    outs = [f"bench.raw{n}" for n in range(RAW_REPEATS)]
    topics = await prepare(bootstrap, mix, *outs)
    await publish(bootstrap, topics, events)
    rates = []
    for out in outs:
        consumer = AIOKafkaConsumer(topics.clicks.name, topics.conversions.name,
                                    bootstrap_servers=bootstrap, group_id=f"{topics.prefix}{out}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        p = producer(bootstrap)
        await consumer.start()
        await p.start()
        try:
            done, first = 0, 0.0
            deadline = time.monotonic() + 120
            while done < len(events):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"raw passthrough stalled at {done} of {len(events)}")
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                if not batches:
                    continue
                first = first or time.perf_counter()
                futures = [await p.send(f"{topics.prefix}{out}", r.value, key=r.key)
                           for records in batches.values() for r in records]
                await asyncio.gather(*futures)
                await consumer.commit()
                done += len(futures)
            rates.append(done / (time.perf_counter() - first))
        finally:
            await p.stop()
            await consumer.stop()
    return rates


@dataclass
class Run:
    events_per_s: float
    seconds: float
    lag_s: float  # first output after the publishing began
    publish_s: float
    cpu_us: float  # CPU time of the Faust process(es) per event, publishing to the end
    finished: bool
    wall_s: float  # from publishing to the end detected (Faust commits every ~3 s)
    decisions: Decisions | None = None


async def faust_run(bootstrap: str, mix: Mix, events: list[Sent], workdir: Path, *,
                    kind: str, workers: int, progress: Progress, task: Any) -> Run:
    """Start ``workers`` Faust processes (``kind`` floor or worker), wait until all are ready,
    publish the input, wait for the end of processing and time it by record timestamps."""
    floor = kind == "floor"
    topics = await prepare(bootstrap, mix, *(["bench.forwarded"] if floor else []))
    group = f"{topics.prefix}{'bench-floor' if floor else APP_ID}"
    env = worker_env(bootstrap, topics)
    if floor:
        argv = [str(BIN / "python"), "-m", "bench.attribution", "floor-worker"]
        env |= {"BENCH_FLOOR_BOOTSTRAP": bootstrap, "BENCH_FLOOR_PREFIX": topics.prefix}
    else:
        argv = [str(BIN / "attribution")]
    label = f"{kind} x{workers}"
    procs = [start(f"{kind}{n}-{topics.prefix.rstrip('.')}", argv, env, workdir)
             for n in range(workers)]
    try:
        progress.update(task, description=f"{label}: starting, waiting for /readyz")
        await all_ready(procs)
        async with Decisions(bootstrap, topics.attributions.name) as decisions:
            progress.update(task, description=f"{label}: publishing {len(events):,} events")
            cpu_before = sum(w.cpu_seconds() for w in procs)
            began = time.time()
            publish_s, ends = await publish(bootstrap, topics, events)
            finished, moved, last_progress = False, -1, time.monotonic()
            while True:
                await asyncio.sleep(0.5)
                seen = len(decisions.ids & mix.expected.decisions.keys())
                done = await committed(bootstrap, group, ends)
                progress.update(task, description=f"{label}: {done:,} of {len(events):,} "
                                f"committed, {seen:,} of {len(mix.expected.decisions):,} "
                                f"decisions out, {time.time() - began:.0f} s")
                if done >= len(events) and (floor or seen >= len(mix.expected.decisions)):
                    finished = True
                    break
                if done + seen > moved:
                    moved, last_progress = done + seen, time.monotonic()
                for w in procs:
                    if w.proc.poll() is not None:
                        raise RuntimeError(f"{w.name} exited with {w.proc.returncode}:\n"
                                           f"{w.tail()}")
                if time.monotonic() - last_progress > STALL_SECONDS:
                    console.print(f"[red]{label}: no progress for {STALL_SECONDS:.0f} s; "
                                  f"{done:,} of {len(events):,} events committed[/red]")
                    break
            cpu = sum(w.cpu_seconds() for w in procs) - cpu_before
            wall = time.time() - began
            if floor:
                names = [f"{topics.prefix}bench.forwarded"]
            else:
                consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
                await consumer.start()
                try:
                    names = [topics.attributions.name, *sorted(
                        t for t in await consumer.topics()
                        if t.startswith(f"{group}-") and t.endswith("-changelog"))]
                finally:
                    await consumer.stop()
            first, last = await record_span(bootstrap, names)
            await asyncio.sleep(0.5)  # the last decisions reach the reader
        seconds = max(last - first, 1e-3)
        return Run(len(events) / seconds, seconds, first - began, publish_s,
                   cpu / len(events) * 1e6, finished, wall, None if floor else decisions)
    finally:
        for w in procs:
            w.stop()


async def latency_run(bootstrap: str, workdir: Path, progress: Progress, task: Any
                      ) -> tuple[list[float], float, Mix, Decisions]:
    """A fresh worker; the mix generated live at :data:`P99_RATE` events/s; the latency of
    every conversion after the warm-up (ms), the offered rate, the mix and its decisions."""
    mix = Mix(seed=11)
    topics = await prepare(bootstrap, mix)
    w = start(f"latency-{topics.prefix.rstrip('.')}", [str(BIN / "attribution")],
              worker_env(bootstrap, topics), workdir)
    try:
        progress.update(task, description="latency: starting the worker")
        await all_ready([w])
        sent_at: dict[str, float] = {}
        p = producer(bootstrap, linger_ms=2)  # as the tracker's producer
        await p.start()
        pending: list[asyncio.Future[Any]] = []
        async with Decisions(bootstrap, topics.attributions.name) as decisions:
            started = time.perf_counter()
            sent = 0
            while (elapsed := time.perf_counter() - started) < P99_SECONDS:
                progress.update(task, description=f"latency: {sent:,} events at "
                                f"{P99_RATE:,.0f}/s offered ({elapsed:.0f} s)")
                for _ in range(int(elapsed * P99_RATE) - sent):
                    at = datetime.now(UTC)
                    conversion, key, data = mix.next(at)
                    decision, value = mix.envelope_of(conversion, data, at)
                    topic = topics.conversions.name if conversion else topics.clicks.name
                    if decision and elapsed >= P99_WARMUP:
                        sent_at[decision] = time.time()
                    pending.append(await p.send(topic, value, key=key.encode()))
                    sent += 1
                if len(pending) > 500:
                    await asyncio.gather(*pending)
                    pending.clear()
                await asyncio.sleep(0.005)
            offered = sent / (time.perf_counter() - started)
            await asyncio.gather(*pending)
            await p.stop()
            moved, last_progress = -1, time.monotonic()
            while not mix.expected.decisions.keys() <= decisions.ids:
                progress.update(task, description=f"latency: waiting for the last decisions "
                                f"({len(decisions.ids):,} of {len(mix.expected.decisions):,})")
                if len(decisions.ids) > moved:
                    moved, last_progress = len(decisions.ids), time.monotonic()
                if time.monotonic() - last_progress > STALL_SECONDS:
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(0.5)
        first_ts: dict[str, float] = {}
        for i, _, _, ts, _ in decisions.records:
            first_ts.setdefault(i, ts)
        latencies = [(first_ts[i] - t) * 1000 for i, t in sent_at.items() if i in first_ts]
        return latencies, offered, mix, decisions
    finally:
        w.stop()


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the run --------------------------------------------------------------------------------

@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[str]:
    b = EmbeddedBroker.on_free_port(log_path=workdir / "broker.log")
    try:
        yield b.bootstrap
    finally:
        b.stop()


def report_check(name: str, decisions: Decisions, mix: Mix) -> bool:
    missing, unexpected, resent = decisions.check(mix.expected)
    ok = not missing and not unexpected
    colour = "green" if ok else "red"
    console.print(f"  [{colour}]{name}: {len(decisions.ids):,} decisions for "
                  f"{len(mix.expected.decisions):,} conversions — missing {missing}, "
                  f"unexpected {unexpected}[/{colour}]"
                  + (f" [yellow](re-sent identically: {resent})[/yellow]" if resent else ""))
    return ok


async def run(workdir: Path) -> int:
    failed = False
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console)
    with progress, broker(workdir) as bootstrap:
        task = progress.add_task(f"generating {EVENTS:,} events", total=6)
        mix, events = make_input(EVENTS)
        conversions = sum(e.conversion for e in events)
        progress.console.print(
            f"input: {len(events):,} events ({len(events) - conversions:,} clicks, "
            f"{conversions:,} conversions: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(mix.expected.kinds.items())) + ")")
        progress.advance(task)

        progress.update(task, description="raw aiokafka passthrough")
        raw_rates = await raw_passthrough(bootstrap, mix, events)
        raw = statistics.median(raw_rates)
        progress.console.print("  raw passthrough   " + ", ".join(
            f"{r:,.0f}" for r in raw_rates) + " events/s")
        progress.advance(task)

        runs: dict[str, Run] = {}
        for name, kind, count in (("floor", "floor", 1), ("worker", "worker", 1),
                                  ("two workers", "worker", 2)):
            r = await faust_run(bootstrap, mix, events, workdir, kind=kind, workers=count,
                                progress=progress, task=task)
            runs[name] = r
            failed |= not r.finished
            progress.console.print(
                f"  {name:<17} {r.events_per_s:7,.0f} events/s  {r.cpu_us:6,.0f} µs CPU/event  "
                f"({r.seconds:.1f} s of output, {r.wall_s:.1f} s from publishing to the "
                f"end seen; first output after {r.lag_s * 1000:.0f} ms; publishing took "
                f"{r.publish_s:.1f} s)")
            if r.decisions is not None:
                failed |= not report_check(name, r.decisions, mix)
            progress.advance(task)
        one, two = runs["worker"].decisions, runs["two workers"].decisions
        assert one is not None and two is not None
        a, b = one.outcomes(), two.outcomes()
        differ = [i for i in a.keys() & b.keys() if a[i] != b[i]]
        if differ:
            failed = True
            progress.console.print(f"[red]  {len(differ)} decisions differ between one and "
                                   f"two workers, e.g. {differ[0]}: {a[differ[0]]} vs "
                                   f"{b[differ[0]]}[/red]")

        latencies, offered, lmix, ldecisions = await latency_run(bootstrap, workdir, progress,
                                                                 task)
        failed |= not report_check("latency run", ldecisions, lmix)
        progress.console.print(
            f"  latency           p50 {pct(latencies, 0.5):.1f} ms  p99 "
            f"{pct(latencies, 0.99):.1f} ms  max {max(latencies, default=0):.1f} ms over "
            f"{len(latencies):,} conversions at {offered:,.0f} events/s offered")
        progress.advance(task)

    floor, single = runs["floor"].events_per_s, runs["worker"].events_per_s
    figures: dict[str, float | int] = {
        "attribution.events": len(events),
        "attribution.raw_events_per_s": round(raw, 1),
        "attribution.faust_floor_events_per_s": round(floor, 1),
        "attribution.events_per_s": round(single, 1),
        "attribution.ratio": round(single / floor, 3),
        "attribution.two_worker_events_per_s": round(runs["two workers"].events_per_s, 1),
        "attribution.two_worker_ratio": round(runs["two workers"].events_per_s / single, 3),
        "attribution.faust_floor_cpu_us_per_event": round(runs["floor"].cpu_us, 1),
        "attribution.cpu_us_per_event": round(runs["worker"].cpu_us, 1),
        "attribution.cpu_ratio": round(runs["floor"].cpu_us / runs["worker"].cpu_us, 3),
        "attribution.p50_ms": round(pct(latencies, 0.5), 1),
        "attribution.p99_ms": round(pct(latencies, 0.99), 1),
    }
    record(figures, command=COMMAND if len(sys.argv) < 2
           else ".venv/bin/python -m bench attribution")
    ratio = figures["attribution.ratio"]
    console.print(f"ratio {ratio:.3f} (target ≥ {TARGET_RATIO}: "
                  f"{'met' if ratio >= TARGET_RATIO else 'missed'}); two workers over one "
                  f"{figures['attribution.two_worker_ratio']:.2f} (both share this machine's "
                  f"{os.cpu_count()} cores with the broker)")
    return 1 if failed else 0


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-attribution-"))
    logging_config = structlog.get_config()
    # the platform's helpers log every topic they create: not news here
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        code = asyncio.run(run(workdir))
    except Exception:
        console.print(f"[red]run failed; logs kept in {workdir}[/red]")
        raise
    finally:
        structlog.configure(**logging_config)
    if code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"[red]logs kept in {workdir}[/red]")
    return code


# -- the Faust floor: a worker that only forwards ------------------------------------------

def floor_worker() -> None:
    """``python -m bench.attribution floor-worker``: a Faust app with the attribution app's
    settings and one agent (concurrency 1) forwarding every event of clicks and conversions
    to ``<prefix>bench.forwarded``; ``/readyz`` answers 200 once a rebalance completed."""
    from attribution.config import AttributionSettings
    from attribution.main import use_event_loop
    from attribution.transport import App

    settings = AttributionSettings()
    use_event_loop()  # the worker's loop: the floor is measured on the same one
    prefix = os.environ["BENCH_FLOOR_PREFIX"]
    topics = TopicRegistry(prefix)
    port = int(os.environ["BENCH_FLOOR_PORT"])
    # attribution's App only for its consumer's fetch wait (without source positions it
    # commits as Faust does): the floor and the worker fetch alike (see docs/performance.md)
    app = App(
        f"{prefix}bench-floor",
        broker=[f"kafka://{s}" for s in os.environ["BENCH_FLOOR_BOOTSTRAP"].split(",")],
        store="memory://", datadir=os.environ["BENCH_FLOOR_DATA"],
        topic_partitions=PARTITIONS, topic_replication_factor=1,
        web_host="127.0.0.1", web_port=port, web_enabled=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        producer_acks=-1, producer_max_batch_size=settings.producer_max_batch_size,
        table_cleanup_interval=60.0,
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    source = app.topic(topics.clicks.name, topics.conversions.name, value_serializer="raw",
                       key_serializer="raw", partitions=PARTITIONS, internal=False)
    out = app.topic(f"{prefix}bench.forwarded", value_serializer="raw", key_serializer="raw",
                    partitions=PARTITIONS, internal=False)
    assigned = asyncio.Event()

    @app.agent(source, concurrency=1)
    async def forward(stream: Any) -> None:
        async for event in stream.events():
            await out.send(key=event.key, value=event.value)

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
        assigned.set()

    @app.on_partitions_revoked.connect
    async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        assigned.clear()

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok = assigned.is_set() and not app.rebalancing
        return web.json({"ready": ok}, status=200 if ok else 503)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "info", "--web-host", "127.0.0.1",
                "--web-port", str(port)]
    app.main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor-worker"]:
        floor_worker()
    else:
        raise SystemExit(main())
