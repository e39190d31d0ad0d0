"""Attribution rules: pure, exhaustive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from attribution.rules import (
    CODE_CHANNEL,
    MAX_CLICKS_PER_CODE,
    VISITOR_DEDUPE,
    Click,
    decide,
    is_repeat_visit,
    remember_click,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from referral_events import (
    AttributionModel,
    CodeSource,
    ConversionRecorded,
    Customer,
    ProgramEntry,
    ReferralCodeEntry,
    RejectionReason,
)
from referral_events.identity import email_hash, key_hash

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def program(**kw) -> ProgramEntry:
    base = dict(program_id="prg_1", name="Shop", landing_url="https://shop.example/",
                currency="EUR", publishable_key_hash=key_hash("pk"), secret_key_hash=key_hash("sk"),
                version=1, updated_at=T0)
    return ProgramEntry(**{**base, **kw})


def code(**kw) -> ReferralCodeEntry:
    base = dict(code="ABC123", program_id="prg_1", referrer_id="ref_1",
                referrer_external_id="cust-ann", referrer_email_hash=email_hash("ann@gmail.com"),
                version=1, updated_at=T0)
    return ReferralCodeEntry(**{**base, **kw})


def conversion(*, at=T0, click_id=None, source=CodeSource.CLICK_ID, customer=None, **kw):
    return ConversionRecorded(
        program_id=kw.pop("program_id", "prg_1"), conversion_id="o-1", code="ABC123",
        code_source=source, click_id=click_id,
        customer=customer or Customer(id="cust-bob", email="bob@example.org", is_new=True),
        amount=5000, currency="EUR", occurred_at=at, **kw)


def click(n: int, *, hours_before: float, channel="email") -> Click:
    return Click(f"clk_ABC123_{n}", T0 - timedelta(hours=hours_before), channel)


CLICKS = [click(1, hours_before=48, channel="whatsapp"), click(2, hours_before=5, channel="x"),
          click(3, hours_before=1, channel="email")]


def run(conv=None, *, prog=None, cd=None, clicks=CLICKS, dup=False, grace_over=True):
    return decide(conversion=conv or conversion(), code=cd if cd is not None else code(),
                  program=prog or program(), clicks=clicks, already_decided=dup,
                  grace_over=grace_over)


NO_CODE_ONLY = {"code_only_attribution": False}


def test_last_click_by_default() -> None:
    d = run()
    assert d.attributed and d.click == CLICKS[2] and d.channel == "email"


def test_first_click_model() -> None:
    d = run(prog=program(attribution_model=AttributionModel.FIRST_CLICK))
    assert d.click == CLICKS[0] and d.channel == "whatsapp"


def test_click_id_wins_over_the_model() -> None:
    d = run(conversion(click_id="clk_ABC123_2"))
    assert d.click == CLICKS[1] and d.channel == "x"


def test_named_click_outside_the_window_is_rejected() -> None:
    old = Click("clk_ABC123_old", T0 - timedelta(days=31), "sms")
    d = run(conversion(click_id=old.click_id), clicks=[old, *CLICKS])
    assert d.reason is RejectionReason.OUTSIDE_WINDOW


def test_window_is_event_time_and_per_programme() -> None:
    clicks = [Click("c", T0 - timedelta(days=8), "sms")]
    assert run(prog=program(attribution_window_days=7, **NO_CODE_ONLY), clicks=clicks,
               conv=conversion()).reason is RejectionReason.OUTSIDE_WINDOW
    assert run(prog=program(attribution_window_days=9), clicks=clicks).click == clicks[0]
    # The same conversion processed much later still looks at its own time.
    late = conversion(at=T0)
    assert run(late, clicks=clicks, prog=program(attribution_window_days=9)).attributed


def test_clicks_after_the_conversion_do_not_count_beyond_clock_skew() -> None:
    future = [Click("c", T0 + timedelta(hours=1), "sms")]
    assert run(clicks=future, prog=program(**NO_CODE_ONLY)).reason is \
        RejectionReason.OUTSIDE_WINDOW
    near = [Click("c", T0 + timedelta(minutes=2), "sms")]
    assert run(clicks=near).click == near[0]


def test_code_only_attribution() -> None:
    d = run(conversion(source=CodeSource.CODE), clicks=[])
    assert d.attributed and d.click is None and d.channel == CODE_CHANNEL
    off = run(conversion(source=CodeSource.CODE), clicks=[],
              prog=program(code_only_attribution=False))
    assert off.reason is RejectionReason.OUTSIDE_WINDOW and "code-only" in off.detail


def test_unseen_click_waits_during_grace_then_falls_back() -> None:
    unseen = conversion(click_id="clk_ABC123_unseen")
    waiting = run(unseen, clicks=[], grace_over=False)
    assert waiting.reason is RejectionReason.OUTSIDE_WINDOW and waiting.awaits_click
    fallback = run(unseen, clicks=[], grace_over=True)
    assert fallback.attributed and fallback.channel == CODE_CHANNEL
    refused = run(unseen, clicks=[], grace_over=True, prog=program(**NO_CODE_ONLY))
    assert refused.reason is RejectionReason.OUTSIDE_WINDOW


def test_a_named_click_outside_the_window_does_not_wait() -> None:
    old = Click("clk_ABC123_old", T0 - timedelta(days=31), "sms")
    d = run(conversion(click_id=old.click_id), clicks=[old], grace_over=False)
    assert d.reason is RejectionReason.OUTSIDE_WINDOW and not d.awaits_click


def test_a_coupon_code_does_not_wait_when_code_only_is_allowed() -> None:
    d = run(conversion(source=CodeSource.CODE), clicks=[], grace_over=False)
    assert d.attributed and d.channel == CODE_CHANNEL


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"cd": None}, RejectionReason.UNKNOWN_CODE),
    ({"cd": code(program_id="prg_other")}, RejectionReason.UNKNOWN_CODE),
    ({"cd": code(active=False)}, RejectionReason.INACTIVE_CODE),
    ({"prog": program(active=False)}, RejectionReason.INACTIVE_CODE),
    ({"dup": True}, RejectionReason.DUPLICATE),
])
def test_rejections(kwargs, reason) -> None:
    if kwargs.get("cd", 1) is None:
        d = decide(conversion=conversion(), code=None, program=program(), clicks=CLICKS)
    else:
        d = run(**kwargs)
    assert d.reason is reason and d.detail


@pytest.mark.parametrize("customer", [
    Customer(id="cust-ann", email="someone@example.org", is_new=True),
    Customer(id="other", email="Ann@GMail.com", is_new=True),
    Customer(id="other", email="a.n.n+promo@googlemail.com", is_new=True),
])
def test_self_referral(customer) -> None:
    assert run(conversion(customer=customer)).reason is RejectionReason.SELF_REFERRAL


def test_existing_customers() -> None:
    old = Customer(id="c", email="c@example.org", is_new=False)
    assert run(conversion(customer=old)).reason is RejectionReason.EXISTING_CUSTOMER
    assert run(conversion(customer=old), prog=program(new_customers_only=False)).attributed
    unknown = Customer(id="c", email="c@example.org", is_new=None)
    assert run(conversion(customer=unknown)).attributed  # not known to be existing


def test_duplicate_is_checked_first() -> None:
    assert run(dup=True, cd=code(active=False)).reason is RejectionReason.DUPLICATE


def test_click_log_prunes_and_keeps_the_first_click() -> None:
    now = T0
    log: list[Click] = [Click("expired", now - timedelta(days=40), "sms")]
    for n in range(MAX_CLICKS_PER_CODE + 10):
        log = remember_click(log, Click(f"c{n}", now - timedelta(minutes=1000 - n), "x"),
                             window_days=30, now=now)
    ids = [c.click_id for c in log]
    assert "expired" not in ids
    assert len(log) == MAX_CLICKS_PER_CODE
    assert ids[0] == "c0" and ids[-1] == f"c{MAX_CLICKS_PER_CODE + 9}"
    assert remember_click(log, log[-1], window_days=30, now=now) == log  # idempotent


def _remember_by_sorting(clicks, click, *, window_days, now):
    """remember_click's definition, without its shortcut for a click appended at the end."""
    horizon = now - timedelta(days=window_days)
    kept = sorted({c.click_id: c for c in [*clicks, click] if c.clicked_at >= horizon}.values(),
                  key=lambda c: c.clicked_at)
    if len(kept) > MAX_CLICKS_PER_CODE:
        kept = [kept[0], *kept[-(MAX_CLICKS_PER_CODE - 1):]]
    return kept


def _is_repeat_by_definition(clicks, click):
    return any(seen.click_id == click.click_id or (
        click.visitor and seen.visitor == click.visitor
        and timedelta(0) <= click.clicked_at - seen.clicked_at < VISITOR_DEDUPE)
        for seen in clicks)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(-50 * 24 * 60, 10),
                          st.sampled_from([None, "v1", "v2"])), max_size=120))
def test_a_click_log_is_what_sorting_every_click_gives(steps) -> None:
    """remember_click's shortcut and is_repeat_visit's scans agree with their definitions,
    whatever the order, repeats, visitors and ages of the clicks (minutes before now)."""
    log: list[Click] = []
    for n, (ident, minutes, visitor) in enumerate(steps):
        click = Click(f"c{ident if n % 3 else n}", T0 + timedelta(minutes=minutes), "x",
                      visitor)
        assert is_repeat_visit(log, click) == _is_repeat_by_definition(log, click)
        expected = _remember_by_sorting(log, click, window_days=30, now=T0)
        log = remember_click(log, click, window_days=30, now=T0)
        assert log == expected


def test_the_same_visitor_is_one_visit_for_an_hour_exactly() -> None:
    first = Click("c1", T0, "x", "v1")
    log = [first]
    assert is_repeat_visit(log, Click("c2", T0 + VISITOR_DEDUPE - timedelta(microseconds=1),
                                      "x", "v1"))
    assert not is_repeat_visit(log, Click("c2", T0 + VISITOR_DEDUPE, "x", "v1"))
    assert not is_repeat_visit(log, Click("c2", T0 - timedelta(seconds=1), "x", "v1"))
    assert not is_repeat_visit(log, Click("c2", T0, "x", "v2"))
    assert not is_repeat_visit(log, Click("c2", T0, "x", None))
    assert is_repeat_visit(log, Click("c1", T0 + timedelta(days=2), "x", None))  # a replay
