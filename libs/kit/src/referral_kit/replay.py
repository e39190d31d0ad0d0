"""`referral-replay`: re-publish dead-lettered events after the fix, each one once.

Every record of a dead-letter topic (``<topic>.dlq``) is an ``EventDeadLettered``: the
original message (bytes, key, partition, offset) and why it was refused. The command reads
the dead-letter topic, and for each record in range that passes the filter publishes the
original bytes with the original key to the source topic (or ``--to``), with a header
``replayed-from: <dlq>/<partition>/<offset>``.

Exactly once per record and target, also when run again: every replay is written to a
ledger, the compacted topic ``<dlq>.replayed``, keyed ``<target>|<partition>|<offset>``; a
run first reads the ledger and skips what it holds. A batch's markers are written after the
broker acknowledged the batch's events, so no record is marked without having been
published. A consumer-group offset could not do this: with ``--filter-reason`` or a range,
records left out by one run must stay replayable by the next, and one committed offset per
partition cannot express such gaps; the ledger can, and it records what was done.

The one window left: a crash after a batch was acknowledged and before its markers were
(at most ``--batch-size`` records) makes the next run publish that batch again. The events
keep their ids, and every consumer of the platform is idempotent by event id, so the effects
still happen once. Run one replay of a dead-letter topic at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from referral_events import EventDeadLettered, EventError, Topic, decode
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .kafka import ensure_topics
from .settings import PlatformSettings

LEDGER_SUFFIX = ".replayed"
REPLAYED_FROM = "replayed-from"

log = structlog.get_logger(__name__)


class ReplayError(Exception):
    """A replay that cannot go on (missing topic, bad option); nothing is half-marked."""


@dataclass(frozen=True)
class Bound:
    """``--since`` / ``--until``: a dead-letter offset or a time (both inclusive)."""

    offset: int | None = None
    time_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> Bound:
        text = text.strip()
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ReplayError(f"{text!r} is neither an offset (e.g. 120) nor an ISO 8601 time "
                              "(e.g. 2026-11-20T08:00:00Z)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(time_ms=int(moment.timestamp() * 1000))


@dataclass(frozen=True)
class ReplayOptions:
    dlq: str
    to: str | None = None
    since: Bound | None = None
    until: Bound | None = None
    filter_reason: str | None = None
    dry_run: bool = False
    batch_size: int = 100


@dataclass(frozen=True)
class Candidate:
    """One dead-lettered record chosen for replay."""

    partition: int
    offset: int
    target: str
    key: bytes | None
    value: bytes
    record: EventDeadLettered

    @property
    def marker(self) -> str:
        return marker_key(self.target, self.partition, self.offset)


@dataclass
class ReplayReport:
    dlq: str
    scanned: int = 0
    replayed: int = 0
    already_replayed: int = 0
    filtered_out: int = 0
    out_of_range: int = 0
    without_value: int = 0
    unreadable: int = 0
    planned: list[Candidate] = field(default_factory=list)

    def summary(self, dry_run: bool = False) -> str:
        verb = "would replay" if dry_run else "replayed"
        done = len(self.planned) if dry_run else self.replayed
        parts = [f"{verb} {done}", f"already replayed {self.already_replayed}"]
        for label, count in (("filtered out", self.filtered_out),
                             ("out of range", self.out_of_range),
                             ("without a value", self.without_value),
                             ("unreadable", self.unreadable)):
            if count:
                parts.append(f"{label} {count}")
        return f"{self.dlq}: {self.scanned} dead-lettered record(s) read; " + ", ".join(parts)


def marker_key(target: str, partition: int, offset: int) -> str:
    return f"{target}|{partition}|{offset}"


def ledger_topic(dlq: str) -> Topic:
    return Topic(f"{dlq}{LEDGER_SUFFIX}", "target|dlq partition|dlq offset", 1, True, (), None)


def matches_reason(record: EventDeadLettered, text: str | None) -> bool:
    if not text:
        return True
    needle = text.casefold()
    return needle in record.reason.casefold() or needle == record.error_code.casefold()


async def replay(bootstrap_servers: str, options: ReplayOptions, *,
                 producer: AIOKafkaProducer | None = None,
                 on_total: Callable[[int], None] | None = None,
                 on_record: Callable[[], None] | None = None) -> ReplayReport:
    """Replay ``options.dlq`` as the module describes; returns what was done. ``producer``
    (started, acks=all) is created from the platform settings when not given."""
    if not options.dlq.endswith(".dlq"):
        raise ReplayError(f"{options.dlq} is not a dead-letter topic; did you mean "
                          f"{options.dlq}.dlq?")
    if options.batch_size < 1:
        raise ReplayError("--batch-size must be at least 1")
    report = ReplayReport(options.dlq)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="referral-replay")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id="referral-replay")
    await admin.start()
    await consumer.start()
    own_producer = None
    try:
        existing = set(await admin.list_topics())
        if options.dlq not in existing:
            raise ReplayError(f"topic {options.dlq} does not exist")
        if options.to and options.to not in existing:
            raise ReplayError(f"topic {options.to} (--to) does not exist")
        ledger = ledger_topic(options.dlq)
        if not options.dry_run and ledger.name not in existing:
            await ensure_topics(bootstrap_servers, [ledger])
            existing.add(ledger.name)
        done: set[str] = set()
        if ledger.name in existing:
            done = await _read_ledger(consumer, ledger.name,
                                      await _partitions(admin, ledger.name))

        if not options.dry_run and producer is None:
            settings = PlatformSettings(kafka_bootstrap_servers=bootstrap_servers)
            own_producer = producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap_servers, client_id="referral-replay", acks="all",
                enable_idempotence=settings.kafka_enable_idempotence, linger_ms=5)
            await own_producer.start()

        batch: list[Candidate] = []

        async def flush() -> None:
            if not batch:
                return
            if options.dry_run:
                report.planned.extend(batch)
            else:
                assert producer is not None
                await _publish(producer, options.dlq, ledger.name, batch)
                report.replayed += len(batch)
            done.update(c.marker for c in batch)
            batch.clear()

        async for record in _read_range(consumer, options.dlq,
                                        await _partitions(admin, options.dlq),
                                        options.since, options.until, on_total):
            report.scanned += 1
            candidate = _choose(record, options, done, existing, report)
            if candidate is not None:
                batch.append(candidate)
                if len(batch) >= options.batch_size:
                    await flush()
            if on_record:
                on_record()
        await flush()
        return report
    finally:
        if own_producer is not None:
            await own_producer.stop()
        await consumer.stop()
        await admin.close()


def _choose(record: ConsumerRecord[Any, Any], options: ReplayOptions, done: set[str],
            existing: set[str], report: ReplayReport) -> Candidate | None:
    since, until = options.since, options.until
    if ((since and since.time_ms is not None and record.timestamp < since.time_ms)
            or (until and until.time_ms is not None and record.timestamp > until.time_ms)):
        report.out_of_range += 1
        return None
    try:
        envelope = decode(record.value)
    except EventError:
        report.unreadable += 1
        return None
    dead = envelope.data
    if not isinstance(dead, EventDeadLettered):
        report.unreadable += 1
        return None
    if not matches_reason(dead, options.filter_reason):
        report.filtered_out += 1
        return None
    target = options.to or dead.original_topic
    if marker_key(target, record.partition, record.offset) in done:
        report.already_replayed += 1
        return None
    value = dead.original_bytes()
    if value is None:
        report.without_value += 1
        return None
    if target not in existing:
        raise ReplayError(f"{options.dlq}@{record.partition}/{record.offset}: target topic "
                          f"{target} does not exist (use --to)")
    key = record.key if record.key is not None else (
        dead.original_key.encode() if dead.original_key is not None else None)
    return Candidate(record.partition, record.offset, target, key, value, dead)


async def _publish(producer: AIOKafkaProducer, dlq: str, ledger: str,
                   batch: list[Candidate]) -> None:
    """The batch's events, acknowledged by the broker; then their markers."""
    sent = [await producer.send(c.target, c.value, key=c.key, headers=[
        (REPLAYED_FROM, f"{dlq}/{c.partition}/{c.offset}".encode())]) for c in batch]
    results = await asyncio.gather(*sent)
    marks = []
    for candidate, meta in zip(batch, results, strict=True):
        marker = {"dlq": dlq, "partition": candidate.partition, "offset": candidate.offset,
                  "target": candidate.target, "target_partition": meta.partition,
                  "target_offset": meta.offset,
                  "replayed_at": datetime.now(UTC).isoformat(timespec="milliseconds")}
        marks.append(await producer.send(ledger, json.dumps(marker).encode(),
                                         key=candidate.marker.encode()))
    await asyncio.gather(*marks)


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    (described,) = await admin.describe_topics([topic])
    return [p["partition"] for p in described["partitions"]]


async def _read_ledger(consumer: AIOKafkaConsumer, topic: str,
                       partitions: list[int]) -> set[str]:
    """Markers of what was replayed already (a tombstone forgets one)."""
    done: set[str] = set()
    async for record in _read_range(consumer, topic, partitions, None, None, None):
        if record.key is None:
            continue
        key = record.key.decode("utf-8", "replace")
        if record.value is None:
            done.discard(key)
        else:
            done.add(key)
    return done


async def _read_range(consumer: AIOKafkaConsumer, topic: str, partitions: list[int],
                      since: Bound | None, until: Bound | None,
                      on_total: Callable[[int], None] | None
                      ) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Records of ``topic`` from ``since`` (default: the beginning) to its end when the read
    began, and no further than ``until``'s offset, each partition in offset order.

    The end is a lower bound only: a fetch that crosses it is read to its last record,
    because some Kafka-protocol brokers (the embedded one) report the end of a partition as
    the base offset of its last batch + 1."""
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        if on_total:
            on_total(0)
        return
    consumer.assign(tps)
    firsts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    starts = dict(firsts)
    if since and since.offset is not None:
        starts = {tp: max(firsts[tp], since.offset) for tp in tps}
    elif since and since.time_ms is not None:
        found = await consumer.offsets_for_times({tp: since.time_ms for tp in tps})
        # No record at or after that time: start at the end. (The embedded broker answers
        # offset 0 with timestamp -1 instead of nothing.)
        starts = {tp: (hit.offset if (hit := found.get(tp)) and hit.timestamp >= since.time_ms
                       else ends[tp]) for tp in tps}
    last = until.offset if until and until.offset is not None else None
    if last is not None:
        ends = {tp: min(ends[tp], last + 1) for tp in tps}
    if on_total:
        on_total(sum(max(0, ends[tp] - starts[tp]) for tp in tps))
    pending = {tp for tp in tps if starts[tp] < ends[tp]}
    for tp in tps:
        consumer.seek(tp, starts[tp])
    idle = 0
    while pending and idle < 10:  # ten empty seconds: the rest is gone (e.g. compacted away)
        batches = await consumer.getmany(*pending, timeout_ms=1000)
        idle = 0 if any(batches.values()) else idle + 1
        for tp, records in batches.items():
            for record in records:
                if last is not None and record.offset > last:
                    pending.discard(tp)
                    break
                yield record
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
    if pending:
        log.warning("stopped reading before the end", topic=topic,
                    partitions=sorted(tp.partition for tp in pending))


# --- the command -------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.command()
def run(
    dlq: Annotated[str, typer.Option("--dlq", help="Dead-letter topic to replay, e.g. "
                                     "referral.attributions.dlq (with TOPIC_PREFIX).")],
    to: Annotated[str | None, typer.Option("--to", help="Publish here instead of each "
                                           "record's source topic.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="First dead-letter offset "
                     "(e.g. 120) or time (e.g. 2026-11-20T08:00:00Z), inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last dead-letter offset or "
                     "time, inclusive.")] = None,
    filter_reason: Annotated[str | None, typer.Option("--filter-reason", help="Only records "
                             "whose reason contains this text, or whose error code is it "
                             "(case-insensitive).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be replayed; "
                                          "publish and mark nothing.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000,
                                            help="Events per acknowledged batch.")] = 100,
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Default: KAFKA_BOOTSTRAP_SERVERS.")] = None,
) -> None:
    """Re-publish the dead-lettered events of DLQ to their source topic, each exactly once:
    a ledger topic <DLQ>.replayed remembers what was replayed, so running it again
    publishes only what is new."""
    out, err = Console(), Console(stderr=True)
    try:
        options = ReplayOptions(
            dlq=dlq, to=to, since=Bound.parse(since) if since else None,
            until=Bound.parse(until) if until else None, filter_reason=filter_reason,
            dry_run=dry_run, batch_size=batch_size)
        bootstrap = bootstrap_servers or PlatformSettings().kafka_bootstrap_servers
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err) as progress:
            task = progress.add_task(f"replaying {dlq}" if not dry_run else f"reading {dlq}",
                                     total=None)
            report = asyncio.run(replay(
                bootstrap, options,
                on_total=lambda n: progress.update(task, total=n),
                on_record=lambda: progress.advance(task)))
    except ReplayError as exc:
        err.print(f"[red]referral-replay:[/red] {exc}")
        raise typer.Exit(1) from None
    if dry_run and report.planned:
        table = Table("dlq offset", "target", "key", "error code", "reason")
        for c in report.planned:
            table.add_row(f"{c.partition}/{c.offset}", c.target,
                          c.key.decode("utf-8", "replace") if c.key else "",
                          c.record.error_code, c.record.reason[:80])
        out.print(table)
    out.print(report.summary(dry_run), highlight=False, soft_wrap=True)


def main() -> None:
    app(prog_name="referral-replay")


if __name__ == "__main__":
    main()
