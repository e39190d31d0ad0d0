"""The attribution processor's per-event logic with dict tables and an in-memory registry view
(the Faust wiring is covered by test_worker against the real broker)."""

from __future__ import annotations

from datetime import timedelta

from attribution.processor import AttributionProcessor
from referral_events import (
    AttributionGraceExpired,
    ClickRecorded,
    ReferralAttributed,
    ReferralRejected,
    RejectionReason,
    new_event,
    utcnow,
)

from .test_rules import code, conversion, program


class RegistryView:
    """The lookups and catch-up bookkeeping of RegistryCache, without a broker."""

    def __init__(self, *, caught_up_at=None) -> None:
        self.programs = {"prg_1": program()}
        self.codes = {"ABC123": code()}
        self.caught_up_at = caught_up_at
        self.catch_ups = 0

    def program(self, program_id):
        return self.programs.get(program_id)

    def code(self, value):
        return self.codes.get(value)

    async def wait_caught_up(self, timeout: float = 10.0) -> None:
        self.catch_ups += 1
        self.caught_up_at = utcnow()


def processor(registry, emitted, grace_seconds=30.0) -> AttributionProcessor:
    async def emit(key, envelope):
        emitted.append((key, envelope))

    return AttributionProcessor(registry=registry, clicks={}, decided={}, waiting={},
                                emit=emit, grace_seconds=grace_seconds)


def recent_conversion(**kw):
    return conversion(at=utcnow(), **kw)


async def test_an_unknown_code_reads_the_registry_once_then_is_rejected():
    registry, emitted = RegistryView(), []
    registry.codes.clear()
    proc = processor(registry, emitted)
    await proc.on_conversion(new_event(recent_conversion(), source="tracker"))
    assert registry.catch_ups == 1
    assert isinstance(emitted[0][1].data, ReferralRejected)
    assert emitted[0][1].data.reason is RejectionReason.UNKNOWN_CODE


async def test_a_view_caught_up_after_the_conversion_is_not_read_again():
    """Unknown codes must not each cost a trip to the end of the registry topic."""
    registry, emitted = RegistryView(), []
    registry.codes.clear()
    envelope = new_event(recent_conversion(), source="tracker")
    registry.caught_up_at = envelope.time + timedelta(seconds=1)
    await processor(registry, emitted).on_conversion(envelope)
    assert registry.catch_ups == 0
    assert emitted[0][1].data.reason is RejectionReason.UNKNOWN_CODE


async def test_a_held_conversion_is_attributed_when_its_click_arrives():
    registry, emitted = RegistryView(), []
    proc = processor(registry, emitted)
    now = utcnow()
    held = recent_conversion(click_id="clk_ABC123_late")
    await proc.on_conversion(new_event(held, source="tracker"))
    assert emitted == []
    assert proc.expired(now + timedelta(seconds=31)) == [("prg_1", "ABC123", ["o-1"])]
    await proc.on_click(ClickRecorded(program_id="prg_1", code="ABC123",
                                      click_id="clk_ABC123_late", channel="email",
                                      occurred_at=now - timedelta(seconds=5)))
    [(key, decided)] = emitted
    assert key == "ABC123"
    assert isinstance(decided.data, ReferralAttributed)
    assert decided.data.click_id == "clk_ABC123_late"
    assert proc.expired(now + timedelta(seconds=31)) == []


async def test_grace_expiry_decides_once_and_a_late_expiry_changes_nothing():
    registry, emitted = RegistryView(), []
    proc = processor(registry, emitted, grace_seconds=0.0)
    held = recent_conversion(click_id="clk_ABC123_never")
    await proc.on_conversion(new_event(held, source="tracker"))
    expiry = AttributionGraceExpired(program_id="prg_1", code="ABC123", conversion_ids=["o-1"],
                                     expired_at=utcnow())
    await proc.on_grace_expired(expiry)
    await proc.on_grace_expired(expiry)  # the timer signalled twice
    assert len(emitted) == 1
    assert isinstance(emitted[0][1].data, ReferralAttributed)
    assert emitted[0][1].data.channel == "code"  # falls back to code-only attribution
