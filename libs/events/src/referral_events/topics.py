"""The one registry of Kafka topics: name, key, partitions, compaction, dead-letter topic.

Names take an optional prefix (setting ``TOPIC_PREFIX``) so several stacks, or several
tests, share one broker without seeing each other's events. Clicks and conversions are
keyed by referral code with the same partition count: attribution joins them per partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attribution import (
    AttributionGraceExpired,
    ReferralAttributed,
    ReferralRejected,
    ReferralStatsCounted,
)
from .base import EventData
from .deadletter import EventDeadLettered
from .notifications import NotificationFailed, NotificationSent
from .registry import ProgramEntry, ReferralCodeEntry
from .rewards import RewardApproved, RewardInReview, RewardPending, RewardRejected, RewardReversed
from .tracking import ClickRecorded, ConversionRecorded, ConversionReversed

DEFAULT_PARTITIONS = 4


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    partitions: int
    compacted: bool
    events: tuple[type[EventData], ...]
    dead_letter: str | None

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(e.event_type for e in self.events)


class TopicRegistry:
    """Every topic of the platform, named for one stack (``prefix``)."""

    def __init__(self, prefix: str = "", partitions: int = DEFAULT_PARTITIONS) -> None:
        if prefix and not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError("TOPIC_PREFIX may hold only letters, digits, '.', '_' and '-'")
        self.prefix = prefix
        p = partitions

        def topic(base: str, key: str, parts: int, events: tuple[type[EventData], ...],
                  compacted: bool = False) -> Topic:
            name = f"{prefix}{base}"
            return Topic(name, key, parts, compacted, events, f"{name}.dlq")

        self.clicks = topic("referral.clicks", "referral code", p, (ClickRecorded,))
        self.conversions = topic(
            "referral.conversions", "referral code", p,
            (ConversionRecorded, AttributionGraceExpired))
        self.reversals = topic(
            "referral.reversals", "program_id:conversion_id", p, (ConversionReversed,)
        )
        self.attributions = topic(
            "referral.attributions", "referral code", p, (ReferralAttributed, ReferralRejected)
        )
        # Compacted by bucket: the newest counts of every bucket stay, enough to rebuild a
        # stats store from scratch.
        self.stats = topic(
            "referral.stats", "program_id|code|channel|hour", p, (ReferralStatsCounted,),
            compacted=True,
        )
        self.rewards = topic(
            "referral.rewards", "referrer_id", p,
            (RewardPending, RewardInReview, RewardApproved, RewardRejected, RewardReversed),
        )
        self.notifications = topic(
            "referral.notifications", "notification_id", p, (NotificationSent, NotificationFailed)
        )
        # One partition keeps a total order of registry changes; the volume is tiny.
        self.registry = topic(
            "referral.registry", "program:<id> | code:<code>", 1,
            (ProgramEntry, ReferralCodeEntry), compacted=True,
        )

    def topics(self) -> list[Topic]:
        """The data topics (without their dead-letter topics)."""
        return [self.clicks, self.conversions, self.reversals, self.attributions,
                self.stats, self.rewards, self.notifications, self.registry]

    def dead_letter_topics(self) -> list[Topic]:
        return [
            Topic(t.dead_letter, "as the source topic", 1, False, (EventDeadLettered,), None)
            for t in self.topics() if t.dead_letter
        ]

    def all(self) -> list[Topic]:
        return self.topics() + self.dead_letter_topics()

    def by_name(self, name: str) -> Topic:
        for t in self.all():
            if t.name == name:
                return t
        raise KeyError(name)
