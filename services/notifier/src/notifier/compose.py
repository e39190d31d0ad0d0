"""Turn a reward event into a localised, multipart email. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import cache, lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision
from jinja2 import Environment, PackageLoader, select_autoescape
from referral_events import (
    RewardApproved,
    RewardEvent,
    RewardPending,
    RewardPurpose,
    RewardRejected,
    RewardReversed,
    utcnow,
)

from .catalogue import LOCALES, MESSAGES

_STATUS = {RewardPending: "pending", RewardApproved: "approved", RewardRejected: "rejected",
           RewardReversed: "reversed"}


@dataclass(frozen=True)
class Email:
    """One localised email, ready to be wrapped in MIME."""

    template: str
    locale: str
    program_id: str
    recipient: str
    subject: str
    text: str
    html: str
    category: str = "rewards"
    unsubscribe_url: str | None = None


def template_for(event: RewardEvent) -> str | None:
    """``<beneficiary>.<status>``, ``referrer.milestone`` for a new milestone bonus, or None
    for events nobody is emailed about (in review)."""
    status = _STATUS.get(type(event))
    if status == "pending" and event.purpose is RewardPurpose.MILESTONE:
        return "referrer.milestone"
    return f"{event.beneficiary.value}.{status}" if status else None


def choose_locale(*candidates: str | None) -> str:
    """The first candidate we have texts for (``nl_BE`` → ``nl``), else English."""
    for candidate in candidates:
        if candidate:
            language = candidate.replace("-", "_").split("_")[0].lower()
            if language in LOCALES:
                return language
    return "en"


@lru_cache(maxsize=4096)
def format_amount(amount: int, currency: str, kind: str, locale: str) -> str:
    """Money from minor units in the locale's notation (nl ``€ 10,00``); points as a count.
    Cached: a programme pays the same few amounts, and babel takes ~0.1 ms to format one."""
    if kind == "points":
        return MESSAGES[locale]["points"].format(count=f"{amount:,}".replace(",", "\u202f"))
    digits = get_currency_precision(currency)
    return format_currency(amount / 10**digits, currency, locale=babel_locale(locale))


def format_day(moment: datetime, locale: str) -> str:
    """The (UTC) day of ``moment`` as the locale writes it in prose (nl ``6 december 2026``)."""
    return format_date(moment, format="long", locale=babel_locale(locale))


def plain_reason(reason: str, locale: str) -> str:
    """A reason code (``cap_reached``, ``refund``, ``min_order_amount: …``) in plain words;
    a reviewer's own words are kept as written."""
    code = reason.split(":", 1)[0].strip()
    return MESSAGES[locale].get(f"reason.{code}", reason)


@cache
def babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale)
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


@cache
def templates() -> Environment:
    # The templates ship inside the package: without auto_reload=False, every email stat()ed
    # each template file to see whether it had changed (~4 % of the notifier's CPU).
    return Environment(loader=PackageLoader("notifier", "templates"),
                       autoescape=select_autoescape(["html", "html.j2"]),
                       keep_trailing_newline=True, auto_reload=False)


def locale_for(event: RewardEvent) -> str:
    """The recipient's language, else the programme's, else English."""
    return choose_locale(event.recipient.locale, event.program_locale)


def compose(event: RewardEvent, *, unsubscribe_url: str | None = None) -> Email | None:
    """The email owed for ``event``, or None when no email is due (no address, in review).
    ``unsubscribe_url`` goes into the footer and the List-Unsubscribe headers."""
    template = template_for(event)
    if template is None or event.recipient.email is None:
        return None
    locale = locale_for(event)
    texts = MESSAGES[locale]
    values = {
        "name": event.recipient.name or "",
        "program": event.program_name,
        "amount": format_amount(event.amount, event.currency, event.kind.value, locale),
        "date": format_day(getattr(event, "available_at", event.occurred_at), locale),
        "reason": plain_reason(getattr(event, "reason", ""), locale),
        "count": event.milestone or "",
    }
    subject = texts[f"{template}.subject"].format(**values)
    greeting = (texts["greeting"].format(**values) if event.recipient.name
                else texts["greeting_anonymous"])
    context = {"lang": locale, "subject": subject, "greeting": greeting,
               "paragraphs": [texts[f"{template}.body"].format(**values)],
               "footer": texts["footer"].format(**values),
               "unsubscribe_url": unsubscribe_url, "unsubscribe_text": texts["unsubscribe"]}
    env = templates()
    return Email(template=template, locale=locale, program_id=event.program_id,
                 recipient=str(event.recipient.email),
                 subject=subject, text=env.get_template("email.txt.j2").render(context),
                 html=env.get_template("email.html.j2").render(context),
                 unsubscribe_url=unsubscribe_url)


def to_mime(email: Email, *, sender: str, sender_name: str, message_id: str,
            unsubscribe_url: str | None = None) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred by readers that can).

    ``unsubscribe_url`` (an https URL signed for this recipient) adds the RFC 2369/8058
    one-click unsubscribe headers; mail clients POST to it without showing a page.
    """
    message = EmailMessage()
    message["From"] = formataddr((sender_name, sender))
    message["To"] = email.recipient
    message["Subject"] = email.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Quoted-printable keeps every line 7-bit and short, so no relay needs 8BITMIME.
    message.set_content(email.text, cte="quoted-printable")
    message.add_alternative(email.html, subtype="html", cte="quoted-printable")
    message["Content-Language"] = email.locale  # after set_content, which drops Content-*
    return message
