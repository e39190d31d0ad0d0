"""Who gets credit for a conversion, or why nobody does. Pure: no Faust, no I/O.

Order of the checks (first that applies wins): duplicate → unknown code → inactive code or
programme → self-referral → existing customer → click matching. Windows are measured in event
time, from the click to the conversion.

Only a conversion naming a click id not seen yet waits for it (the grace period). One that
carries only a code is decided on arrival with the clicks handled by then: clicks and
conversions are separate topics with no order between them, so a click sent just before
such a conversion may be handled after it, and the conversion is then attributed code-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from referral_events import (
    AttributionModel,
    CodeSource,
    ConversionRecorded,
    ProgramEntry,
    ReferralCodeEntry,
    RejectionReason,
)
from referral_events.identity import email_hash

CODE_CHANNEL = "code"
CLOCK_SKEW = timedelta(minutes=5)
"""A click stamped up to this long after the conversion still counts (clocks disagree)."""
MAX_CLICKS_PER_CODE = 50


VISITOR_DEDUPE = timedelta(hours=1)
"""The same visitor clicking the same code again within this span is one click."""


@dataclass(frozen=True)
class Click:
    click_id: str
    clicked_at: datetime
    channel: str
    visitor: str | None = None
    """Salted hash of the visitor (cookie or IP + agent), when the tracker knew one."""


@dataclass(frozen=True)
class Decision:
    reason: RejectionReason | None
    detail: str
    click: Click | None = None
    channel: str | None = None
    awaits_click: bool = False
    """Rejected only because no click was seen: a late click could still change it."""

    @property
    def attributed(self) -> bool:
        return self.reason is None


def _reject(reason: RejectionReason, detail: str) -> Decision:
    return Decision(reason, detail)


def decide(*, conversion: ConversionRecorded, code: ReferralCodeEntry | None,
           program: ProgramEntry | None, clicks: Sequence[Click],
           already_decided: bool = False, grace_over: bool = True) -> Decision:
    """The attribution decision for ``conversion`` given what is known of its code.

    ``grace_over`` False means a late click may still arrive: a conversion naming a click id
    not seen yet is then not given code-only credit (the caller holds it back instead)."""
    if already_decided:
        return _reject(RejectionReason.DUPLICATE,
                       f"conversion {conversion.conversion_id} was already decided")
    if code is None or program is None or code.program_id != conversion.program_id:
        return _reject(RejectionReason.UNKNOWN_CODE,
                       f"code {conversion.code!r} is not a referral code of this programme")
    if not code.active or not program.active:
        what = "code" if not code.active else "programme"
        return _reject(RejectionReason.INACTIVE_CODE, f"the {what} is no longer active")
    customer = conversion.customer
    if customer.id == code.referrer_external_id:
        return _reject(RejectionReason.SELF_REFERRAL, "the customer is the referrer")
    if customer.email and code.referrer_email_hash and \
            email_hash(str(customer.email)) == code.referrer_email_hash:
        return _reject(RejectionReason.SELF_REFERRAL,
                       "the customer's email is the referrer's (after normalisation)")
    if program.new_customers_only and customer.is_new is False:
        return _reject(RejectionReason.EXISTING_CUSTOMER,
                       "the programme rewards new customers only")
    return _match_click(conversion, program, clicks, grace_over)


def _match_click(conversion: ConversionRecorded, program: ProgramEntry,
                 clicks: Sequence[Click], grace_over: bool) -> Decision:
    window = timedelta(days=program.attribution_window_days)
    at = conversion.occurred_at

    def in_window(click: Click) -> bool:
        return at - window <= click.clicked_at <= at + CLOCK_SKEW

    if conversion.click_id:
        named = next((c for c in clicks if c.click_id == conversion.click_id), None)
        if named is not None:
            if in_window(named):
                return Decision(None, "the conversion carried this click id", named,
                                named.channel)
            return _reject(RejectionReason.OUTSIDE_WINDOW,
                           f"click {named.click_id} is outside the "
                           f"{program.attribution_window_days}-day window")
    eligible = sorted((c for c in clicks if in_window(c)), key=lambda c: c.clicked_at)
    if eligible:
        first = program.attribution_model == AttributionModel.FIRST_CLICK
        chosen = eligible[0] if first else eligible[-1]
        return Decision(None, f"{program.attribution_model.value} within the window",
                        chosen, chosen.channel)
    carried_code = conversion.code_source == CodeSource.CODE
    if program.code_only_attribution and (carried_code or grace_over):
        return Decision(None, "code-only attribution (no click of this code seen)", None,
                        CODE_CHANNEL)
    return Decision(RejectionReason.OUTSIDE_WINDOW,
                    f"no click of this code within the {program.attribution_window_days}-day "
                    "window" + ("" if program.code_only_attribution
                                else " and code-only attribution is off"),
                    awaits_click=True)


def remember_click(clicks: Sequence[Click], click: Click, *, window_days: int,
                   now: datetime) -> list[Click]:
    """The click log of a code after ``click``: expired clicks dropped, the first click kept
    (first-click needs it) and at most :data:`MAX_CLICKS_PER_CODE` of the latest ones.
    ``clicks`` is a log this function returned (oldest first)."""
    horizon = now - timedelta(days=window_days)
    if (clicks and clicks[0].clicked_at >= horizon and click.clicked_at >= clicks[-1].clicked_at
            and click.click_id not in [c.click_id for c in clicks]):
        # the usual case, a new click later than any in an unexpired log: appended (what the
        # general case below yields, without a sort)
        kept = [*clicks, click]
    else:
        kept = sorted({c.click_id: c for c in [*clicks, click]
                       if c.clicked_at >= horizon}.values(), key=lambda c: c.clicked_at)
    if len(kept) > MAX_CLICKS_PER_CODE:
        kept = [kept[0], *kept[-(MAX_CLICKS_PER_CODE - 1):]]
    return kept


def is_repeat_visit(clicks: Sequence[Click], click: Click) -> bool:
    """True when ``click`` is already in the log (a replay) or the same visitor clicked this
    code within :data:`VISITOR_DEDUPE` before it: it is then not counted again."""
    # once per click of the code: the common answer (no) from two scans in C
    if click.click_id in [seen.click_id for seen in clicks]:
        return True
    visitor = click.visitor
    if not visitor or visitor not in [seen.visitor for seen in clicks]:
        return False
    at = click.clicked_at
    since = at - VISITOR_DEDUPE
    return any(seen.visitor == visitor and since < seen.clicked_at <= at for seen in clicks)
