"""Email composition: pure, every template in every locale."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from notifier.catalogue import LOCALES, MESSAGES
from notifier.compose import choose_locale, compose, format_amount, plain_reason, to_mime
from referral_events import (
    Beneficiary,
    Recipient,
    RewardApproved,
    RewardInReview,
    RewardKind,
    RewardPending,
    RewardRejected,
    RewardReversed,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def _event(cls, *, locale="en", beneficiary=Beneficiary.REFERRER, name="Ann", **extra):
    base = dict(reward_id="rwd_1", program_id="prg_1", program_name="Demo Shop",
                program_locale="en", referrer_id="ref_1", beneficiary=beneficiary,
                recipient=Recipient(email="ann@example.com", name=name, locale=locale),
                conversion_id="o-1", kind=RewardKind.CASH, amount=1000, currency="EUR",
                occurred_at=NOW)
    if cls is RewardPending:
        extra.setdefault("available_at", LATER)
    if cls in (RewardRejected, RewardReversed):
        extra.setdefault("reason", "refund")
    return cls(**base, **extra)


def test_every_locale_has_every_text() -> None:
    assert set(LOCALES) == set(MESSAGES)
    for locale in LOCALES:
        assert set(MESSAGES[locale]) == set(MESSAGES["en"]), locale


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("cls", [RewardPending, RewardApproved, RewardRejected, RewardReversed])
@pytest.mark.parametrize("beneficiary", list(Beneficiary))
def test_each_email_in_each_locale(locale, cls, beneficiary) -> None:
    email = compose(_event(cls, locale=locale, beneficiary=beneficiary))
    assert email is not None and email.locale == locale
    status = cls.event_type.rsplit(".", 1)[1]
    assert email.template == f"{beneficiary.value}.{status}"
    assert "Demo Shop" in email.subject
    amount = format_amount(1000, "EUR", "cash", locale)
    assert amount in email.text and amount in email.html
    assert "{" not in email.text and "{" not in email.subject
    if cls is RewardPending:
        assert "2026" in email.subject  # the date the hold ends
    if cls in (RewardRejected, RewardReversed):
        assert MESSAGES[locale]["reason.refund"] in email.text


@pytest.mark.parametrize(("locale", "expected"), [
    ("en", "€10.00"), ("nl", "€\xa010,00"), ("da", "10,00\xa0€"), ("it", "10,00\xa0€")])
def test_money_is_formatted_for_the_locale(locale, expected) -> None:
    assert format_amount(1000, "EUR", "cash", locale) == expected


def test_points_and_zero_decimal_currencies() -> None:
    assert format_amount(250, "EUR", "points", "nl") == "250 punten"
    assert format_amount(500, "JPY", "cash", "en") == "¥500"


def test_locale_choice_falls_back() -> None:
    assert choose_locale("nl-BE", "it") == "nl"
    assert choose_locale(None, "da") == "da"
    assert choose_locale("fr", None) == "en"


def test_reasons_in_plain_words_or_as_written() -> None:
    assert plain_reason("min_order_amount: order 5 below 10", "it") == MESSAGES["it"][
        "reason.min_order_amount"]
    assert plain_reason("Duplicate account, see ticket 42", "en") == \
        "Duplicate account, see ticket 42"


def test_nothing_to_send_without_address_or_for_review() -> None:
    assert compose(_event(RewardInReview)) is None
    no_email = _event(RewardPending).model_copy(update={"recipient": Recipient()})
    assert compose(no_email) is None


def test_mime_is_multipart_text_and_html() -> None:
    email = compose(_event(RewardPending, locale="da", name=None))
    message = to_mime(email, sender="referrals@shop.example", sender_name="Shop",
                      message_id="<x@shop.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Content-Language"] == "da"
    assert message.get_body(("plain",)).get_content().startswith("Hej,")


def test_html_escapes_names() -> None:
    email = compose(_event(RewardApproved, name="<script>x</script>"))
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html


def test_one_click_unsubscribe_headers_when_a_link_is_given() -> None:
    email = compose(_event(RewardPending))
    plain = to_mime(email, sender="r@shop.example", sender_name="Shop", message_id="<x@s>")
    assert plain["List-Unsubscribe"] is None
    url = "https://notify.shop.example/u/prg_1/abc.sig"
    message = to_mime(email, sender="r@shop.example", sender_name="Shop", message_id="<x@s>",
                      unsubscribe_url=url)
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058


@pytest.mark.parametrize(("locale", "day"), [
    ("en", "December 6, 2026"), ("nl", "6 december 2026"), ("da", "6. december 2026"),
    ("it", "6 dicembre 2026")])
def test_the_hold_end_is_written_as_the_locale_writes_dates(locale, day) -> None:
    email = compose(_event(RewardPending, locale=locale))
    assert day in email.subject and day in email.text and day in email.html
