"""The marketers' digest: once per period (daily by default), each active programme's KPIs of
the period just ended, emailed to its ``marketer_emails`` with a link to the dashboard.

The figures come from the rewards admin API's stats endpoint (the same numbers the
dashboard shows). Every replica may run the scheduler: a digest is a notification keyed by
(programme, period, recipient), so it is sent once whoever gets there first, and a restart
in the middle resends nothing that went out.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import structlog
from babel.numbers import format_decimal, format_percent
from referral_events import utcnow
from referral_kit.consuming import PoisonEvent

from .catalogue import MESSAGES
from .compose import Email, babel_locale, choose_locale, format_amount, format_day, templates
from .config import NotifierSettings
from .delivery import Delivery
from .notifications import State
from .unsubscribe import Category, Subscription, UnsubscribeTokens

log = structlog.get_logger(__name__)
TEMPLATE = "marketer.digest"


@dataclass(frozen=True)
class Period:
    kind: str  # "daily" | "weekly"
    start: date  # first day, UTC
    end: date  # last day, included

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.start.isoformat()}"


def last_complete_period(now: datetime, kind: str, delay: timedelta) -> Period:
    """The newest period that ended at least ``delay`` before ``now`` (UTC days; weeks start
    on Monday)."""
    settled = (now - delay).astimezone(UTC).date()
    if kind == "weekly":
        this_monday = settled - timedelta(days=settled.weekday())
        return Period(kind, this_monday - timedelta(days=7), this_monday - timedelta(days=1))
    yesterday = settled - timedelta(days=1)
    return Period(kind, yesterday, yesterday)


def compose_digest(*, program: dict[str, Any], stats: dict[str, Any], period: Period,
                   recipient: str, dashboard_url: str, unsubscribe_url: str | None) -> Email:
    """The digest email for one marketer (programme locale)."""
    locale = choose_locale(program.get("locale"))
    texts = MESSAGES[locale]
    currency = stats.get("currency") or program["currency"]

    def money(amount: int) -> str:
        return format_amount(int(amount), currency, "cash", locale)

    def number(value: int) -> str:
        return format_decimal(int(value), locale=babel_locale(locale))

    def percent(value: float | None) -> str:
        if value is None:
            return texts["digest.none"]
        return format_percent(value, format="#,##0.0%", locale=babel_locale(locale))

    day = format_day(datetime.combine(period.start, datetime.min.time(), UTC), locale)
    period_text = texts[f"digest.period.{period.kind}"].format(date=day)
    name = program["name"]
    channels = sorted(stats.get("by_channel") or [], key=lambda c: (-c.get("attributed", 0),
                                                                    -c.get("clicks", 0)))
    best = next((c["channel"] for c in channels if c.get("clicks") or c.get("attributed")),
                texts["digest.none"])
    in_review = (stats.get("rewards_by_status") or {}).get("in_review", 0)
    rows = [
        (texts["digest.clicks"], number(stats["clicks"])),
        (texts["digest.conversions"], number(stats["conversions"])),
        (texts["digest.attributed"], number(stats["attributed"])),
        (texts["digest.conversion_rate"], percent(stats.get("conversion_rate"))),
        (texts["digest.revenue"], money(stats["revenue"])),
        (texts["digest.reward_cost"], money(stats["reward_cost"])),
        (texts["digest.roi"], percent(stats.get("roi"))),
        (texts["digest.in_review"], number(in_review)),
        (texts["digest.top_channel"], best),
    ]
    subject = texts["digest.subject"].format(program=name, period=period_text,
                                             attributed=number(stats["attributed"]),
                                             revenue=money(stats["revenue"]))
    context = {"lang": locale, "subject": subject, "greeting": texts["greeting_anonymous"],
               "paragraphs": [texts["digest.intro"].format(program=name, period=period_text)],
               "rows": rows, "link": (texts["digest.dashboard"], dashboard_url),
               "footer": texts["digest.footer"].format(program=name),
               "unsubscribe_url": unsubscribe_url, "unsubscribe_text": texts["unsubscribe"]}
    env = templates()
    return Email(template=TEMPLATE, locale=locale, program_id=program["id"], recipient=recipient,
                 subject=subject, text=env.get_template("email.txt.j2").render(context),
                 html=env.get_template("email.html.j2").render(context), category="digest",
                 unsubscribe_url=unsubscribe_url)


class DigestScheduler:
    """Sends each period's digests once the period is over (plus a settling delay)."""

    def __init__(self, *, settings: NotifierSettings, delivery: Delivery,
                 tokens: UnsubscribeTokens) -> None:
        self._settings, self._delivery, self._tokens = settings, delivery, tokens
        self._task: asyncio.Task[None] | None = None
        self._done: set[str] = set()  # periods fully sent by this process (saves API calls)

    async def start(self) -> None:
        if self._settings.digest_period != "off":
            self._task = asyncio.create_task(self._loop(), name="marketer-digest")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once(utcnow())
            except Exception as exc:  # the API or SMTP is away: the next round tries again
                log.warning("digest round failed; will retry", error=repr(exc))
            await asyncio.sleep(self._settings.digest_check_seconds)

    async def run_once(self, now: datetime) -> int:
        """Send the digests of the last complete period; returns how many digest emails are
        settled by this call (sent now, or found sent before: never sent twice)."""
        settings = self._settings
        period = last_complete_period(now, settings.digest_period,
                                      timedelta(seconds=settings.digest_delay_seconds))
        if period.key in self._done:
            return 0
        sent = 0
        headers = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
        async with httpx.AsyncClient(base_url=settings.rewards_url, headers=headers,
                                     timeout=30) as api:
            programs = await api.get("/v1/programs", params={"active": "true"})
            for program in programs.raise_for_status().json():
                if not program.get("marketer_emails"):
                    continue
                stats = (await api.get(f"/v1/programs/{program['id']}/stats", params={
                    "from": period.start.isoformat(), "to": period.end.isoformat()})
                ).raise_for_status().json()
                sent += await self._send(program, stats, period)
        self._done.add(period.key)
        return sent

    async def _send(self, program: dict[str, Any], stats: dict[str, Any], period: Period) -> int:
        sent = 0
        locale = choose_locale(program.get("locale"))
        for recipient in program["marketer_emails"]:
            subscription = Subscription(recipient, program["id"], Category.DIGEST, locale,
                                        program["name"])
            email = compose_digest(program=program, stats=stats, period=period,
                                   recipient=recipient, dashboard_url=self._settings.dashboard,
                                   unsubscribe_url=self._tokens.url(subscription))
            try:
                outcome = await self._delivery.deliver(
                    email, source_event_id=f"digest:{program['id']}:{period.key}")
            except PoisonEvent as exc:  # refused for good: logged and announced, not retried
                log.warning("digest refused by SMTP", program_id=program["id"], error=str(exc))
                continue
            sent += int(outcome.state is State.SENT)
        return sent
