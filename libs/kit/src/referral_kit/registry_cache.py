"""In-memory view of the compacted registry topic (programmes and referral codes).

Reads the topic from the beginning without a consumer group, so every replica holds the
whole registry; ``ready`` turns true once it has caught up with the end offsets seen at
start. Later entries replace earlier ones when their ``version`` is not lower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from referral_events import EventError, ProgramEntry, ReferralCodeEntry, Topic, decode, utcnow

log = structlog.get_logger(__name__)


class RegistryCache:
    def __init__(self, *, bootstrap_servers: str, topic: Topic, client_id: str,
                 fetch_max_wait_ms: int) -> None:
        self._bootstrap = bootstrap_servers
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._topic = topic
        self._client_id = client_id
        self.programs: dict[str, ProgramEntry] = {}
        self.codes: dict[str, ReferralCodeEntry] = {}
        self._by_key_hash: dict[str, ProgramEntry] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self.ready = False
        #: when the view last held every record written before this instant
        self.caught_up_at: datetime | None = None
        self.listeners: list[Callable[[ProgramEntry | ReferralCodeEntry], None]] = []

    # -- lookups ---------------------------------------------------------------------
    def program(self, program_id: str) -> ProgramEntry | None:
        return self.programs.get(program_id)

    def code(self, code: str) -> ReferralCodeEntry | None:
        return self.codes.get(code)

    def program_for_key_hash(self, key_hash: str) -> ProgramEntry | None:
        return self._by_key_hash.get(key_hash)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, client_id=self._client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await self._consumer.start()
        # Reading a topic that does not exist would make a broker that auto-creates topics
        # create it, uncompacted, and the view would count as loaded (empty). The list of
        # all topics creates nothing: wait for whoever owns the topic (ensure_topics).
        if self._topic.name not in await self._consumer.topics():
            await self._consumer.stop()
            self._consumer = None
            raise LookupError(f"the registry topic {self._topic.name} does not exist yet; it "
                              "is created with the others at start-up (referral-topics)")
        partitions = [TopicPartition(self._topic.name, p) for p in range(self._topic.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run(), name="registry-cache")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    @property
    def alive(self) -> bool:
        """False once the reading task has died (the view would silently go stale)."""
        return self._task is not None and not self._task.done()

    async def wait_caught_up(self, within: float = 10.0) -> None:
        """Return once every record written before this call has been applied (TimeoutError
        after ``within`` seconds)."""
        assert self._consumer is not None
        asked_at = utcnow()
        ends = await self._consumer.end_offsets(list(self._consumer.assignment()))

        def caught_up() -> bool:
            return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(caught_up), within)
        self.ready = True
        if self.caught_up_at is None or asked_at > self.caught_up_at:
            self.caught_up_at = asked_at

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            async with self._progress:
                for tp, records in batches.items():
                    for record in records:
                        self._apply(record.key, record.value)
                    self._positions[tp] = records[-1].offset + 1
                for tp in self._consumer.assignment():
                    if tp not in batches:
                        self._positions[tp] = await self._consumer.position(tp)
                self._progress.notify_all()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # tombstone: the entry is gone
            name = (key or b"").decode()
            kind, _, ident = name.partition(":")
            if kind == "program":
                entry = self.programs.pop(ident, None)
                if entry:
                    self._by_key_hash.pop(entry.publishable_key_hash, None)
                    self._by_key_hash.pop(entry.secret_key_hash, None)
            elif kind == "code":
                self.codes.pop(ident, None)
            return
        try:
            data = decode(value).data
        except EventError as exc:
            log.error("registry entry refused", reason=exc.reason, field=exc.field)
            return
        if isinstance(data, ProgramEntry):
            old = self.programs.get(data.program_id)
            if old and old.version > data.version:
                return
            if old:
                self._by_key_hash.pop(old.publishable_key_hash, None)
                self._by_key_hash.pop(old.secret_key_hash, None)
            self.programs[data.program_id] = data
            self._by_key_hash[data.publishable_key_hash] = data
            self._by_key_hash[data.secret_key_hash] = data
        elif isinstance(data, ReferralCodeEntry):
            old_code = self.codes.get(data.code)
            if old_code and old_code.version > data.version:
                return
            self.codes[data.code] = data
        else:
            return
        for listener in self.listeners:
            listener(data)
