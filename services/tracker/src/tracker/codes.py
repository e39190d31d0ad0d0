"""Which referral code a conversion belongs to (it keys and partitions the event)."""

from __future__ import annotations

from dataclasses import dataclass

from referral_events import CodeSource, ReferralCodeEntry
from referral_events.identity import code_from_click_id

from .links import is_well_formed_code


class CodeUnresolved(ValueError):
    """Neither ``code`` nor ``click_id`` names a referral code; ``field`` is the one to fix."""

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


def referral_code_of(*, code: str | None, click_id: str | None) -> tuple[str, CodeSource]:
    """The conversion's referral code and where it came from.

    A click id embeds its code, and is the stronger evidence (it names the click), so it
    wins when both are given; they must then agree. Whether the code exists or is active
    is not decided here: attribution decides, and rejects with a reason.
    """
    if click_id:
        from_click = code_from_click_id(click_id)
        if from_click is None or not is_well_formed_code(from_click):
            raise CodeUnresolved(
                "click_id is not a click id of this platform (expected clk_<code>_<token>, "
                "as in the rclid parameter of the landing URL); send it unchanged, or send "
                "code instead.", field="click_id")
        if code and code != from_click:
            raise CodeUnresolved(
                f"click_id belongs to referral code {from_click!r}, not to {code!r}; send "
                "the pair from the same visit, or only one of them.", field="click_id")
        return from_click, CodeSource.CLICK_ID
    if code:
        return code, CodeSource.CODE
    raise CodeUnresolved(
        "one of code or click_id is required: send the referral code (e.g. from a coupon "
        "field) or the click id (the rclid parameter or the ref_click cookie).", field="code")


@dataclass(frozen=True, slots=True)
class ClickRefused:
    """Why a click cannot be recorded for a code (``status``: 403 or 422); callers put
    the field's name before ``detail``."""

    status: int
    title: str
    detail: str


def click_refusal(entry: ReferralCodeEntry | None, *, program_id: str, code: str
                  ) -> ClickRefused | None:
    """None when ``code`` (registry ``entry``) may record a click for ``program_id``: it must
    be an active code of that programme. A key never records clicks for another's codes."""
    if entry is not None and entry.program_id != program_id:
        return ClickRefused(403, "Forbidden",
                            f"Referral code {code!r} belongs to another programme than this "
                            "key; use that programme's key.")
    if entry is None or not entry.active:
        return ClickRefused(422, "Unknown referral code",
                            f"{code!r} is not an active referral code of programme "
                            f"{program_id}; send the code from the referral link.")
    return None
