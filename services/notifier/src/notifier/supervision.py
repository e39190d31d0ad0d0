"""Keep the reward consumer running for the life of the process.

An EventConsumer's loop can still end for good on an unexpected error (it keeps its group
membership through long retries, and a refused offset commit no longer ends it; anything else
escaping the loop is logged with its traceback and ends it). Offsets are committed only after
an email's outcome is on record, so a fresh consumer resumes exactly where the dead one
stopped; this module starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from prometheus_client import Counter
from referral_kit.consuming import EventConsumer

log = structlog.get_logger(__name__)
RESTARTS = Counter("notifier_consumer_restarts_total", "Consumer loops replaced after dying")


class SupervisedConsumer:
    """Runs the consumer ``factory`` makes, and replaces it whenever its loop has ended."""

    def __init__(self, factory: Callable[[], EventConsumer], *, check_interval_s: float = 1.0,
                 max_backoff_s: float = 30.0) -> None:
        self._factory = factory
        self._check_interval = check_interval_s
        self._max_backoff = max_backoff_s
        self._consumer: EventConsumer | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the first consumer (errors surface to the caller), then watch it."""
        self._consumer = self._factory()
        await self._consumer.start()
        self._watch = asyncio.create_task(self._supervise(), name="notifier-consumer-watch")

    @property
    def running(self) -> bool:
        """True while a consumer loop is running under watch."""
        return (self._watch is not None and not self._watch.done()
                and self._consumer is not None and self._consumer.running)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _supervise(self) -> None:
        backoff = self._check_interval
        while True:
            await asyncio.sleep(backoff)
            if self._consumer is not None and self._consumer.running:
                backoff = self._check_interval
                continue
            log.error("reward consumer loop ended; starting a new one")
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._consumer.stop()
                self._consumer = None
            try:
                consumer = self._factory()
                await consumer.start()
            except Exception:  # broker away: try again later
                log.exception("could not start a new reward consumer", retry_in_s=backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            self._consumer = consumer
            RESTARTS.inc()
