"""Reward events on the rewards topic become the right email, in the recipient's language,
as received by a real SMTP server (parsed back from MIME)."""

from __future__ import annotations

import pytest
from referral_events import (
    Beneficiary,
    NotificationSent,
    RewardPending,
    RewardPurpose,
    RewardRejected,
)

from tests.notifier.support import address, reward
from tests.support import eventually
from tests.support.kafka import collect, of_type, publish

# What a reader of each language sees for €10.00 pending until 6 December 2026.
PENDING = {
    "en": ("Your Demo Shop referral converted: €10.00 pending until December 6, 2026",
           "Hi Ann,", "€10.00", "December 6, 2026"),
    "nl": ("Je doorverwijzing bij Demo Shop is omgezet: €\xa010,00 in afwachting tot "
           "6 december 2026", "Hallo Ann,", "€\xa010,00", "6 december 2026"),
    "da": ("Din henvisning til Demo Shop er blevet til et køb: 10,00\xa0€ afventer indtil "
           "6. december 2026", "Hej Ann,", "10,00\xa0€", "6. december 2026"),
    "it": ("Il tuo invito su Demo Shop si è convertito: 10,00\xa0€ in attesa fino al "
           "6 dicembre 2026", "Ciao Ann,", "10,00\xa0€", "6 dicembre 2026"),
}


@pytest.mark.parametrize("locale", sorted(PENDING))
async def test_pending_reward_emails_the_referrer_in_their_language(
        locale, notifier, smtp_sink, kafka_bootstrap, topics):
    subject, greeting, amount, day = PENDING[locale]
    to = address()
    event = reward(RewardPending, email=to, locale=locale)
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event))

    [message] = await eventually(lambda: smtp_sink.handler.to(to), message="no email arrived")
    assert message["To"] == to
    assert message["From"] == "Referrals <referrals@localhost>"
    assert message["Subject"] == subject
    assert message["Content-Language"] == locale
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert text.startswith(greeting)
    for part in (text, html):
        assert amount in part and day in part and "Demo Shop" in part
    assert f'<html lang="{locale}">' in html

    [sent] = of_type(await collect(kafka_bootstrap, topics.notifications.name,
                                   until=lambda ev: bool(of_type(ev, NotificationSent))),
                     NotificationSent)
    assert (sent.source_event_id, sent.template, sent.locale) == (
        event.id, "referrer.pending", locale)
    assert sent.message_id == message["Message-ID"]


async def test_programme_locale_is_used_when_the_recipient_has_none(
        notifier, smtp_sink, kafka_bootstrap, topics):
    to = address()
    event = reward(RewardPending, email=to, locale=None, program_locale="it")
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event))
    [message] = await eventually(lambda: smtp_sink.handler.to(to))
    assert message["Subject"] == PENDING["it"][0]


async def test_friend_and_rejection_emails_say_what_happened(notifier, smtp_sink,
                                                             kafka_bootstrap, topics):
    friend, referrer = address(), address()
    await publish(
        kafka_bootstrap, topics.rewards.name,
        ("ref_1", reward(RewardPending, email=friend, locale="nl", name="Bo",
                         beneficiary=Beneficiary.FRIEND, amount=500)),
        ("ref_1", reward(RewardRejected, email=referrer, locale="da", reason="chargeback")))

    [welcome] = await eventually(lambda: smtp_sink.handler.to(friend))
    assert welcome["Subject"] == ("Welkom bij Demo Shop: je beloning van €\xa05,00 staat in "
                                  "afwachting tot 6 december 2026")
    assert welcome.get_body(("plain",)).get_content().startswith("Hallo Bo,")

    [rejected] = await eventually(lambda: smtp_sink.handler.to(referrer))
    assert rejected["Subject"] == "Din belønning fra Demo Shop blev ikke godkendt"
    assert "betalingen blev tilbageført" in rejected.get_body(("plain",)).get_content()


@pytest.mark.parametrize("locale,subject", [
    ("en", "You reached 5 successful referrals at Demo Shop: €25.00 bonus"),
    ("da", "Du har nået 5 vellykkede henvisninger hos Demo Shop: 25,00\xa0€ i bonus"),
])
async def test_a_milestone_bonus_is_celebrated(locale, subject, notifier, smtp_sink,
                                               kafka_bootstrap, topics):
    to = address()
    event = reward(RewardPending, email=to, locale=locale, amount=2500,
                   purpose=RewardPurpose.MILESTONE, milestone=5)
    await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", event))
    [message] = await eventually(lambda: smtp_sink.handler.to(to), message="no email arrived")
    assert message["Subject"] == subject
    assert " 5 " in message.get_body(("plain",)).get_content()
