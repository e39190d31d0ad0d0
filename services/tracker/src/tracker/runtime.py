"""The tracker's long-lived parts, wired in one place: producer, registry view, ingest.

Start-up never blocks the HTTP server: a background task connects to the broker and
reads the registry to its end, retrying with backoff, so the process serves /healthz
(and answers 503 elsewhere) while the broker is away, and becomes ready once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from referral_kit.registry_cache import RegistryCache

from .config import TrackerSettings
from .ingest import ReferralIngest
from .keys import KeyKind
from .publisher import EventPublisher
from .rate_limits import KeyBudget
from .recent import RecentClicks, RecentWrites

log = structlog.get_logger(__name__)


class TrackerRuntime:
    def __init__(self, settings: TrackerSettings) -> None:
        self.settings = settings
        self.topics = settings.topic_registry()
        self.publisher = EventPublisher(settings, send_timeout=settings.send_timeout_seconds,
                                        linger_ms=settings.producer_linger_ms,
                                        max_batch_bytes=settings.producer_max_batch_bytes)
        self.ingest = ReferralIngest(
            publisher=self.publisher, topics=self.topics,
            hash_salt=settings.ip_hash_salt.get_secret_value(),
            recent=RecentWrites(settings.recent_writes),
            clicks=RecentClicks(seconds=settings.click_dedupe_seconds,
                                capacity=settings.click_dedupe_capacity),
        )
        self.budgets = {KeyKind.PUBLISHABLE: KeyBudget(settings.publishable_budget),
                        KeyKind.SECRET: KeyBudget(settings.secret_budget)}
        """Per-key event budgets of this replica, by kind of key."""
        self.registry: RegistryCache | None = None
        """Set once the registry topic has been read to its end; None before."""
        self._connector: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._connector = asyncio.create_task(self._connect(), name="tracker-connect")

    async def stop(self) -> None:
        if self._connector:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self.registry:
            await self.registry.stop()
        with contextlib.suppress(Exception):
            # Flushes what is in flight; bounded, since the broker may be gone.
            await asyncio.wait_for(self.publisher.stop(),
                                   self.settings.send_timeout_seconds + 5)

    async def readiness(self) -> dict[str, bool]:
        """``broker``: a broker answers the producer now; ``registry``: caught up once and
        still being read (a dead reader would leave the view silently stale)."""
        registry = self.registry
        return {
            "broker": await self.publisher.reachable(),
            "registry": registry is not None and registry.ready and registry.alive,
        }

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                if not self.publisher.started:
                    await self.publisher.start()
                if self.registry is None:
                    self.registry = await self._load_registry()
                log.info("tracker connected", bootstrap=self.settings.kafka_bootstrap_servers,
                         programs=len(self.registry.programs), codes=len(self.registry.codes))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure here means "retry later"
                log.warning("broker or registry not available yet; retrying", error=repr(exc),
                            retry_in=delay, bootstrap=self.settings.kafka_bootstrap_servers)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _load_registry(self) -> RegistryCache:
        cache = RegistryCache(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                              topic=self.topics.registry, client_id="tracker-registry",
                              fetch_max_wait_ms=self.settings.kafka_background_fetch_max_wait_ms)
        try:
            await cache.start()
            await cache.wait_caught_up(self.settings.registry_catch_up_seconds)
        except BaseException:
            with contextlib.suppress(Exception):
                await cache.stop()
            raise
        return cache
