"""`referral-topics`: create every topic of the registry (idempotent; a deploy/set-up step)."""

from __future__ import annotations

import asyncio
import sys

from .kafka import ensure_topics
from .settings import PlatformSettings


def main() -> None:
    settings = PlatformSettings()
    topics = settings.topic_registry().all()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, topics))
    print(f"{len(topics)} topics present, {len(created)} created", file=sys.stderr)
