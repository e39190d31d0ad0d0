"""Publish to and read from real topics in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from referral_events import Envelope, EventData, EventError, decode, encode


async def publish(bootstrap: str, topic: str, *messages: tuple[str | None, Envelope[Any] | bytes]
                  ) -> None:
    """Send (key, envelope-or-raw-bytes) pairs and wait for the broker's acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for key, message in messages:
            value = message if isinstance(message, bytes) else encode(message)
            await producer.send_and_wait(topic, value, key=key.encode() if key else None)
    finally:
        await producer.stop()


async def collect(bootstrap: str, topic: str, *, until: Callable[[list[Envelope[EventData]]], bool],
                  timeout: float = 30.0) -> list[Envelope[EventData]]:
    """Read ``topic`` from the beginning until ``until(events)`` holds; return the events.
    Undecodable records are skipped here (tests of dead-lettering read the DLQ topic)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    events: list[Envelope[EventData]] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(events):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met after {timeout:.0f}s; "
                                     f"got {[e.type for e in events]}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        events.append(decode(record.value))
                    except EventError:
                        continue
        return events
    finally:
        await consumer.stop()


def of_type(events: list[Envelope[EventData]], kind: type) -> list[Any]:
    return [e.data for e in events if isinstance(e.data, kind)]
