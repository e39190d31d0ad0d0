"""Test helpers of the tracker: registry seeding and topic reading on the real broker."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from referral_events import (
    AttributionModel,
    Envelope,
    ProgramEntry,
    ReferralCodeEntry,
    Topic,
    TopicRegistry,
    decode,
    encode,
    new_event,
    utcnow,
)
from referral_events.identity import key_hash
from tracker.app import create_app
from tracker.config import TrackerSettings

from tests.support import eventually, serve_asgi

BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def random_ref(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Programme:
    """A programme as the rewards service would publish it, with its clear-text keys."""

    program_id: str = field(default_factory=lambda: random_ref("prg_"))
    landing_url: str = "https://shop.example/welcome?lang=en"
    attribution_model: AttributionModel = AttributionModel.LAST_CLICK
    active: bool = True
    publishable_key: str = field(default_factory=lambda: random_ref("pk_"))
    secret_key: str = field(default_factory=lambda: random_ref("sk_"))
    version: int = 1

    def entry(self) -> ProgramEntry:
        return ProgramEntry(
            program_id=self.program_id, name="Test shop", landing_url=self.landing_url,
            currency="EUR", attribution_model=self.attribution_model, active=self.active,
            publishable_key_hash=key_hash(self.publishable_key),
            secret_key_hash=key_hash(self.secret_key), version=self.version,
            updated_at=utcnow(),
        )

    def code_entry(self, code: str, *, active: bool = True, version: int = 1
                   ) -> ReferralCodeEntry:
        return ReferralCodeEntry(code=code, program_id=self.program_id,
                                 referrer_id=random_ref("ref_"), referrer_external_id="cust-1",
                                 active=active, version=version, updated_at=utcnow())


async def publish_registry(bootstrap: str, topics: TopicRegistry,
                           *entries: ProgramEntry | ReferralCodeEntry) -> None:
    """Write registry snapshots the way rewards does (compacted topic, keyed by entry)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for entry in entries:
            await producer.send_and_wait(topics.registry.name, encode(new_event(entry,
                                         source="test")), key=entry.registry_key().encode())
    finally:
        await producer.stop()


@dataclass
class Received:
    key: str | None
    envelope: Envelope[Any]
    record: ConsumerRecord[bytes, bytes]


class TopicReader:
    """Everything on one topic from the beginning, accumulated across polls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest")
        self.received: list[Received] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Received]:
        for records in (await self._consumer.getmany(timeout_ms=200)).values():
            for record in records:
                self.received.append(Received(record.key.decode() if record.key else None,
                                              decode(record.value), record))
        return self.received

    async def wait_for(self, predicate: Any, *, message: str) -> Received:
        """The first event whose envelope satisfies ``predicate`` (polls until it arrives)."""
        async def find() -> Received | None:
            return next((r for r in await self.poll() if predicate(r.envelope)), None)

        return await eventually(find, timeout=20, message=message)


PRIVATE_BROKER_LOG = (Path(__file__).resolve().parents[1] / "artifacts" / "logs"
                      / "tracker-private-broker.log")
"""Where the tests' private brokers (fixture ``private_broker``) write."""


async def read_records(bootstrap: str, topic: Topic) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topic`` up to its end offsets now (exact: nothing more was acked)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord[bytes, bytes]] = []

        async def at_end() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            return all([await consumer.position(tp) >= ends[tp] for tp in partitions])

        await eventually(at_end, timeout=20, message=f"{topic.name} not read to its end")
        return found
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: Topic) -> list[Received]:
    """Every event on ``topic`` up to its end offsets now, decoded (:func:`read_records`)."""
    return [Received(r.key.decode() if r.key else None, decode(r.value), r)
            for r in await read_records(bootstrap, topic)]


@contextlib.asynccontextmanager
async def running_tracker(settings: TrackerSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A ready tracker for ``settings`` in this process, and a browser-like client of it."""
    async with serve_asgi(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=15,
                                     headers={"User-Agent": BROWSER_UA}) as client:
            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30, message="tracker never ready")
            yield client


def secret(programme: Programme) -> dict[str, str]:
    """The Authorization header of ``programme``'s secret key."""
    return {"Authorization": f"Bearer {programme.secret_key}"}


def publishable(programme: Programme) -> dict[str, str]:
    return {"X-Publishable-Key": programme.publishable_key}


async def known_code(client: httpx.AsyncClient, code: str) -> None:
    """Wait until the tracker learnt ``code`` from the registry (HEAD records no click)."""
    async def redirects() -> bool:
        return (await client.head(f"/r/{code}")).status_code == 302

    await eventually(redirects, message=f"the tracker never learnt code {code}")
