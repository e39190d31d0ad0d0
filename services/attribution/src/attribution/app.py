"""The Faust app, wired in one place: topics, tables, the agent, health and metrics views.

One agent (concurrency 1: faust-streaming #606 commits past in-flight events otherwise) reads
clicks and conversions, which share key (referral code) and partition count, so every table
entry of a code lives in the partition that code's events arrive on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import mode
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from referral_events import (
    AttributionGraceExpired,
    ClickRecorded,
    ConversionRecorded,
    Envelope,
    EventError,
    UnknownEventType,
    decode,
    encode,
    new_event,
    utcnow,
)
from referral_kit.deadletter import dead_letter
from referral_kit.kafka import ensure_topics, make_producer
from referral_kit.registry_cache import RegistryCache

from .config import AttributionSettings
from .processor import AttributionProcessor

log = structlog.get_logger(__name__)


def create_app(settings: AttributionSettings | None = None) -> faust.App:
    settings = settings or AttributionSettings()
    topics = settings.topic_registry()
    app = faust.App(
        settings.faust_id,
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers.split(",")],
        store=settings.store,
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
        table_cleanup_interval=60.0,
    )
    source = app.topic(topics.clicks.name, topics.conversions.name, value_serializer="raw",
                       key_serializer="raw", partitions=settings.topic_partitions,
                       internal=False)
    clicks = app.Table("clicks-by-code", default=None, partitions=settings.topic_partitions)
    decided = app.Table("decided-conversions", default=None,
                        partitions=settings.topic_partitions)
    waiting = app.Table("conversions-awaiting-click", default=None,
                        partitions=settings.topic_partitions)
    registry = RegistryCache(bootstrap_servers=settings.kafka_bootstrap_servers,
                             topic=topics.registry, client_id="attribution-registry")
    kafka: dict[str, Any] = {}  # the producer is created inside the worker's event loop
    started = asyncio.Event()
    by_name = {topics.clicks.name: topics.clicks, topics.conversions.name: topics.conversions}

    async def emit(key: str, envelope: Envelope[Any]) -> None:
        await kafka["producer"].send_and_wait(topics.attributions.name, encode(envelope),
                                     key=key.encode())

    processor = AttributionProcessor(registry=registry, clicks=clicks, decided=decided,
                                     waiting=waiting, emit=emit,
                                     grace_seconds=settings.grace_seconds)

    @app.service
    class Connections(mode.Service):
        """Our own producer (outputs, dead letters) and the registry view, for the app's life."""

        async def on_start(self) -> None:
            await ensure_topics(settings.kafka_bootstrap_servers, topics.all())
            kafka["producer"] = make_producer(settings, client_id="attribution")
            await kafka["producer"].start()
            await registry.start()
            await registry.wait_caught_up(settings.registry_catch_up_seconds)
            started.set()
            log.info("attribution connected", programs=len(registry.programs),
                     codes=len(registry.codes))

        async def on_stop(self) -> None:
            await registry.stop()
            if "producer" in kafka:
                await kafka["producer"].stop()

    @app.agent(source, concurrency=1)
    async def attribute(stream: Any) -> None:
        async for event in stream.events():
            await started.wait()
            message = event.message
            topic = by_name[message.topic]
            try:
                envelope = decode(event.value)
                if envelope.type not in topic.event_types:
                    raise UnknownEventType(f"{envelope.type} does not belong on {topic.name}",
                                           field="type")
            except EventError as exc:
                await dead_letter(kafka["producer"], topic, key=message.key, value=event.value,
                                  partition=message.partition, offset=message.offset, error=exc,
                                  consumer="attribution")
                continue
            if isinstance(envelope.data, ClickRecorded):
                await processor.on_click(envelope.data)
            elif isinstance(envelope.data, ConversionRecorded):
                await processor.on_conversion(envelope)
            elif isinstance(envelope.data, AttributionGraceExpired):
                await processor.on_grace_expired(envelope.data)

    @app.timer(interval=max(0.25, min(5.0, settings.grace_seconds / 4)))
    async def expire_grace() -> None:
        """Ask the stream to decide conversions whose grace is over (see the event's doc)."""
        if not started.is_set():
            return
        now = utcnow()
        for program_id, code, ids in processor.expired(now):
            expiry = AttributionGraceExpired(program_id=program_id, code=code,
                                             conversion_ids=ids, expired_at=now)
            await kafka["producer"].send_and_wait(
                topics.conversions.name, encode(new_event(expiry, source="attribution")),
                key=code.encode())

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = {"registry": registry.ready, "connected": started.is_set(),
                  "assigned": not app.rebalancing}
        ok = all(checks.values())
        return web.json({"status": "ready" if ok else "not_ready", "checks": checks},
                        status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.text(generate_latest().decode(), content_type=CONTENT_TYPE_LATEST)

    return app
