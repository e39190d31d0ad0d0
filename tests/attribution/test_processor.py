"""The attribution processor's per-event logic with dict tables and an in-memory registry view
(the Faust wiring is covered by test_worker against the real broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from attribution import stats
from attribution.processor import AttributionProcessor
from faust.serializers.codecs import get_codec
from hypothesis import given
from hypothesis import strategies as st
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

    async def wait_caught_up(self, within: float = 10.0) -> None:
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


def _click(click_id: str, *, visitor: str | None, at):
    return ClickRecorded(program_id="prg_1", code="ABC123", click_id=click_id, channel="email",
                         visitor_hash=visitor, occurred_at=at)


async def test_hourly_counts_count_each_visit_once_and_each_conversion_once():
    registry, emitted = RegistryView(), []
    proc = processor(registry, emitted)
    # One hour bucket for all of it, whatever the clock says: the previous hour's :30.
    now = utcnow().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    await proc.on_click(_click("clk_ABC123_a", visitor="v1", at=now - timedelta(minutes=10)))
    await proc.on_click(_click("clk_ABC123_a", visitor="v1", at=now - timedelta(minutes=10)))
    await proc.on_click(_click("clk_ABC123_b", visitor="v1", at=now - timedelta(minutes=5)))
    await proc.on_click(_click("clk_ABC123_c", visitor="v2", at=now - timedelta(minutes=5)))
    envelope = new_event(conversion(at=now, click_id="clk_ABC123_b"), source="tracker")
    await proc.on_conversion(envelope)
    await proc.on_conversion(envelope)  # a replay of the same event: decided again, not counted
    other = conversion(at=now, click_id="clk_ABC123_b")
    await proc.on_conversion(new_event(other, source="elsewhere"))  # same order, other event
    due = dict(proc.stats_due())
    assert proc.stats_due() == []  # nothing changed since
    email = [counts for key, counts in due.items() if "|email|" in key]
    none = [counts for key, counts in due.items() if "|none|" in key]
    assert len(email) == 1 and len(none) == 1
    assert (email[0]["clicks"], email[0]["conversions"], email[0]["attributed"]) == (2, 1, 1)
    assert email[0]["revenue"] == 5000
    assert none[0]["rejected"] == {"duplicate": 1} and none[0]["conversions"] == 0
    assert [e.data.click_id for _, e in emitted if isinstance(e.data, ReferralAttributed)] \
        == ["clk_ABC123_b", "clk_ABC123_b"]  # the replay re-sends the same decision
    assert len({e.id for _, e in emitted if isinstance(e.data, ReferralAttributed)}) == 1


async def test_a_held_conversion_is_counted_when_decided_not_when_held():
    registry, emitted = RegistryView(), []
    proc = processor(registry, emitted, grace_seconds=0.0)
    held = recent_conversion(click_id="clk_ABC123_never")
    await proc.on_conversion(new_event(held, source="tracker"))
    assert proc.stats_due() == []
    await proc.on_grace_expired(AttributionGraceExpired(
        program_id="prg_1", code="ABC123", conversion_ids=["o-1"], expired_at=utcnow()))
    [(key, counts)] = proc.stats_due()
    assert key.split("|")[:3] == ["prg_1", "ABC123", "code"]
    assert (counts["conversions"], counts["attributed"], counts["version"]) == (1, 1, 1)


def test_stats_events_carry_the_bucket():
    from attribution.stats import bucket_key, count_click, count_decision, stats_event

    at = utcnow()
    key = bucket_key("prg_1", "ABC123", "qr", at)
    counts = count_decision(count_click(None), reason="self_referral")
    event = stats_event(key, counts)
    assert (event.program_id, event.code, event.channel) == ("prg_1", "ABC123", "qr")
    assert event.hour == at.replace(minute=0, second=0, microsecond=0)
    assert (event.clicks, event.conversions, event.attributed, event.version) == (1, 1, 0, 2)
    assert event.rejected == {RejectionReason.SELF_REFERRAL: 1}


class CountingTable(dict):
    """A dict table that counts its writes (each would be a changelog record)."""

    writes = 0

    def __setitem__(self, key, value):
        self.writes += 1
        super().__setitem__(key, value)


async def test_click_logs_are_written_compactly_and_the_first_format_is_still_read():
    registry, emitted = RegistryView(), []
    clicks = CountingTable()
    at = utcnow() - timedelta(minutes=3)
    clicks["ABC123"] = [{"click_id": "clk_ABC123_old", "channel": "qr",  # the first format
                         "clicked_at": (at - timedelta(minutes=1)).isoformat()}]

    async def emit(key, envelope):
        emitted.append(envelope)

    proc = AttributionProcessor(registry=registry, clicks=clicks, decided={}, waiting={},
                                emit=emit, grace_seconds=30.0)
    click = _click("clk_ABC123_new", visitor="v9", at=at.replace(microsecond=123456))
    await proc.on_click(click)
    # what Faust's JSON codec writes to the changelog, and what recovery hands back
    record = json.loads(get_codec("json").dumps(clicks["ABC123"]))
    assert all(isinstance(entry, list) for entry in record)
    assert record[1][0] == "clk_ABC123_new" and record[1][3] == "v9"
    assert [c.clicked_at for c in AttributionProcessor(
        registry=registry, clicks={"ABC123": record}, decided={}, waiting={}, emit=emit,
        grace_seconds=30.0).click_log("ABC123")] == [at - timedelta(minutes=1), click.occurred_at]
    writes = clicks.writes
    await proc.on_click(click)  # a replayed click changes nothing: no table write
    assert clicks.writes == writes
    await proc.on_conversion(new_event(recent_conversion(click_id="clk_ABC123_old"),
                                       source="tracker"))
    [decision] = emitted
    assert decision.data.click_id == "clk_ABC123_old" and decision.data.channel == "qr"
    assert decision.data.clicked_at == at - timedelta(minutes=1)


@given(st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-9, minutes=-30)),
                                               timezone(timedelta(hours=14))])))
def test_a_bucket_is_named_by_its_utc_hour(at):
    assert stats.bucket_key("prg_1", "ABC123", "qr", at) == \
        f"prg_1|ABC123|qr|{stats.hour_of(at).isoformat()}"
