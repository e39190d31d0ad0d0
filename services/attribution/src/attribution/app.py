"""The Faust app, wired in one place: topics, tables, the agent, health and metrics views.

One agent (concurrency 1: faust-streaming #606 commits past in-flight events otherwise) reads
clicks and conversions, which share key (referral code) and partition count, so every table
entry of a code lives in the partition that code's events arrive on.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import faust
import mode
import structlog
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from referral_events import (
    AttributionGraceExpired,
    ClickRecorded,
    ConversionRecorded,
    Envelope,
    EventError,
    Topic,
    UnknownEventType,
    decode,
    derived_id,
    encode,
    encode_new_event,
    new_event,
    utcnow,
)
from referral_kit.deadletter import dead_letter
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.registry_cache import RegistryCache

from . import stats
from .changelog import CommitTimeTable, acknowledged
from .config import AttributionSettings
from .processor import AttributionProcessor
from .transport import Admit, App, SourcePositions

log = structlog.get_logger(__name__)
SEND_RETRIES = Counter("attribution_send_retries_total",
                       "Outputs the broker refused and that were sent again", ["topic"])
#: a grace expiry is signalled again only if the stream has not acted on it by then
GRACE_RESIGNAL_SECONDS = 10.0
#: a source partition behind its end whose next offset has not moved for this long is re-read
UNSTICK_SECONDS = 5.0
#: decisions sent and not yet acknowledged, at most: the agent waits for the oldest beyond it
MAX_UNCONFIRMED = 1000


def create_app(settings: AttributionSettings | None = None) -> faust.App:
    settings = settings or AttributionSettings()
    topics = settings.topic_registry()
    data_dir = settings.data_dir or tempfile.mkdtemp(prefix=f"{settings.faust_id}-")
    app = App(  # faust.App that commits what the agent decided: see .transport
        settings.faust_id,
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers.split(",")],
        store=settings.store,
        datadir=str(data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        producer_acks=-1,
        producer_max_batch_size=settings.producer_max_batch_size,
        table_cleanup_interval=60.0,
        Table=CommitTimeTable,  # one changelog record per key changed, at commit
    )
    source = app.topic(topics.clicks.name, topics.conversions.name, value_serializer="raw",
                       key_serializer="raw", partitions=settings.topic_partitions,
                       internal=False)
    clicks = app.Table("clicks-by-code", default=None, partitions=settings.topic_partitions)
    decided = app.Table("decided-conversions", default=None,
                        partitions=settings.topic_partitions)
    waiting = app.Table("conversions-awaiting-click", default=None,
                        partitions=settings.topic_partitions)
    counts = app.Table("hourly-counts", default=None, partitions=settings.topic_partitions)
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    registry = RegistryCache(bootstrap_servers=settings.kafka_bootstrap_servers,
                             topic=topics.registry, client_id="attribution-registry",
                             fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    kafka: dict[str, Any] = {}  # the producer is created inside the worker's event loop
    started = asyncio.Event()
    assigned = asyncio.Event()  # set once a rebalance completed (tables recovered)
    signalled: dict[tuple[str, str], float] = {}  # (code, conversion) → when expiry was sent
    by_name = {topics.clicks.name: topics.clicks, topics.conversions.name: topics.conversions}
    types_on = {name: topic.event_types for name, topic in by_name.items()}  # computed once

    async def until_sent(topic: str, send: Callable[[], Awaitable[Any]]) -> None:
        """Send until the broker has it: the agent waits rather than crash or skip an event."""
        backoff = 0.1
        while True:
            try:
                await send()
                return
            except KafkaError as exc:
                SEND_RETRIES.labels(topic).inc()
                log.warning("send refused, retrying", topic=topic, error=repr(exc),
                            retry_in=round(backoff, 2))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.emit_retry_max_backoff_seconds)

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await until_sent(topic, lambda: kafka["producer"].send_and_wait(topic, value, key=key))

    async def send_many(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        """Send all at once (they share produce requests), each until the broker has it:
        handed to the producer together, and only those refused go through :func:`send`."""
        producer, handed = kafka["producer"], []
        for key, value in messages:
            try:
                handed.append((key, value, await producer.send(topic, value, key=key)))
            except KafkaError:
                handed.append((key, value, None))
        await asyncio.gather(*(f for _, _, f in handed if f is not None),
                             return_exceptions=True)
        refused = [(key, value) for key, value, f in handed
                   if f is None or not acknowledged(f)]
        if refused:
            await asyncio.gather(*(send(topic, key, value) for key, value in refused))

    # The agent does not wait for a decision's acknowledgement before the next record: the
    # decision's offset is committed only once it came (SourcePositions), and a decision
    # replayed after a crash is the same decision (idempotent by conversion).
    outputs: list[asyncio.Future[Any]] = []  # the current record's
    unconfirmed: deque[asyncio.Future[Any]] = deque()  # every record's, oldest first

    async def emit(key: str, envelope: Envelope[Any]) -> None:
        output = asyncio.ensure_future(send(topics.attributions.name, key.encode(),
                                            encode(envelope)))
        outputs.append(output)
        unconfirmed.append(output)

    async def to_dead_letter(message: Any, topic: Topic, value: bytes, exc: EventError) -> None:
        await until_sent(topic.dead_letter, lambda: dead_letter(
            kafka["producer"], topic, key=message.key, value=value,
            partition=message.partition, offset=message.offset, error=exc,
            consumer="attribution"))

    processor = AttributionProcessor(registry=registry, clicks=clicks, decided=decided,
                                     waiting=waiting, emit=emit, counts=counts,
                                     grace_seconds=settings.grace_seconds)

    @app.service
    class Connections(mode.Service):
        """Our own producer (outputs, dead letters) and the registry view, for the app's life."""

        async def on_start(self) -> None:
            await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
            kafka["producer"] = make_producer(settings, client_id="attribution", linger_ms=0)
            await kafka["producer"].start()
            await registry.start()
            await registry.wait_caught_up(settings.registry_catch_up_seconds)
            started.set()
            log.info("attribution connected", programs=len(registry.programs),
                     codes=len(registry.codes))

        async def on_stop(self) -> None:
            await registry.stop()
            if unconfirmed:  # decisions on their way: let them arrive (their offsets then
                # commit), unless the broker is gone: they are re-decided after a restart
                await asyncio.wait(list(unconfirmed), timeout=5)
            if "producer" in kafka:
                await kafka["producer"].stop()

    positions = app.source_positions = SourcePositions(by_name)

    async def handle(event: Any) -> None:
        message = event.message
        topic = by_name[message.topic]
        try:
            envelope = decode(event.value)
            if envelope.type not in types_on[message.topic]:
                raise UnknownEventType(f"{envelope.type} does not belong on {topic.name}",
                                       field="type")
        except EventError as exc:
            await to_dead_letter(message, topic, event.value, exc)
            return
        if isinstance(envelope.data, ClickRecorded):
            await processor.on_click(envelope.data)
        elif isinstance(envelope.data, ConversionRecorded):
            await processor.on_conversion(envelope)
        elif isinstance(envelope.data, AttributionGraceExpired):
            await processor.on_grace_expired(envelope.data)

    @app.agent(source, concurrency=1)
    async def attribute(stream: Any) -> None:
        # Only the next offset of a partition is handled, and only what was handled is
        # committed (.transport): Faust acknowledges records it skipped, we must not.
        async for event in stream.events():
            if not started.is_set():
                await started.wait()
            message = event.message
            tp = message.tp
            verdict = positions.admit(tp, message.offset)
            if verdict is Admit.HANDLE:
                outputs.clear()
                await handle(event)
                positions.handled(tp, message.offset, tuple(outputs))
                while unconfirmed and (unconfirmed[0].done()
                                       or len(unconfirmed) > MAX_UNCONFIRMED):
                    await unconfirmed.popleft()
            elif verdict is Admit.AHEAD:
                offset = positions.should_seek_back(tp)
                if offset is not None:
                    await app.seek_back(tp, offset, f"offset {message.offset} arrived first")

    @app.timer(interval=UNSTICK_SECONDS)
    async def unstick_sources() -> None:
        """A record skipped at the end of a partition has no successor to reveal it."""
        if started.is_set():
            await app.unstick(after=UNSTICK_SECONDS)

    @app.timer(interval=max(0.25, min(5.0, settings.grace_seconds / 4)))
    async def expire_grace() -> None:
        """Ask the stream to decide conversions whose grace is over (see the event's doc)."""
        if not started.is_set():
            return
        now, tick = utcnow(), time.monotonic()
        due = processor.expired(now)
        pending = {(code, cid) for _, code, ids in due for cid in ids}
        for key in [k for k in signalled if k not in pending]:
            del signalled[key]  # decided (or moved to another worker): forget it
        for program_id, code, ids in due:
            fresh = [cid for cid in ids
                     if tick - signalled.get((code, cid), -GRACE_RESIGNAL_SECONDS)
                     >= GRACE_RESIGNAL_SECONDS]
            if not fresh:
                continue
            expiry = AttributionGraceExpired(program_id=program_id, code=code,
                                             conversion_ids=fresh, expired_at=now)
            await send(topics.conversions.name, code.encode(),
                       encode(new_event(expiry, source="attribution")))
            for cid in fresh:
                signalled[(code, cid)] = tick

    @app.timer(interval=settings.stats_flush_seconds)
    async def send_stats() -> None:
        """Publish the hourly counts that changed (absolute, versioned: idempotent)."""
        if not started.is_set():
            return
        now, due = utcnow(), []
        for key, bucket in processor.stats_due():
            event = stats.stats_event(key, bucket)
            due.append((key.encode(), encode_new_event(
                event, source="attribution", time=now,
                id=derived_id("stats", key, str(event.version)))))
        await send_many(topics.stats.name, due)

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
        processor.mark_recent_dirty(utcnow() - timedelta(hours=2))
        assigned.set()

    @app.on_partitions_revoked.connect
    async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        assigned.clear()

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = {"registry": registry.ready and registry.alive,
                  "connected": started.is_set(),
                  "assigned": assigned.is_set() and not app.rebalancing}
        ok = all(checks.values())
        return web.json({"status": "ready" if ok else "not_ready", "checks": checks},
                        status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.text(generate_latest().decode(), content_type=CONTENT_TYPE_LATEST)

    return app
