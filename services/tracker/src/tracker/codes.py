"""Which referral code a conversion belongs to (it keys and partitions the event)."""

from __future__ import annotations

from referral_events import CodeSource
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
