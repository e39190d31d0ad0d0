"""Fraud checks: pure functions over what is known about one attributed referral. No I/O.

Each check returns a :class:`FraudSignal` (``signal``, the measured ``value``, the
``threshold`` it was held against, the ``action`` taken) when it fires, so every decision
explains itself. Actions, strongest first:

- ``reject``: every reward of the referral is rejected with reason ``fraud:<signal>``;
- ``flag``: the rewards wait in the manual review queue (``in_review``), never auto-approved;
- ``extend_hold``: the rewards stay pending, their ``available_at`` pushed by
  ``extend_hold_by``.

Thresholds and actions are per programme (:class:`FraudSettings`, the programme's ``fraud``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from referral_events import FraudAction, FraudSignal
from referral_events.identity import normalize_email

from .holds import InvalidDuration, parse_duration


def _duration(value: str) -> str:
    try:
        parse_duration(value)
    except InvalidDuration as exc:
        raise ValueError(str(exc)) from None
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


Country = Annotated[str, BeforeValidator(_upper), Field(pattern=r"^[A-Z]{2}$",
                                                         examples=["NL"])]


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


class VelocityCheck(_Check):
    """More than ``max_per_hour`` attributed referrals for one referrer within an hour (by
    conversion time, this one included)."""

    max_per_hour: int = Field(10, ge=1)
    action: FraudAction = FraudAction.FLAG


class SameIpOrDeviceCheck(_Check):
    """The conversion's IP hash or device id is one the referrer was enrolled with."""

    action: FraudAction = FraudAction.FLAG


class DisposableEmailCheck(_Check):
    """The friend's email domain (or a parent domain) is a known disposable-mail provider
    (the maintained list of the ``disposable-email-domains`` package)."""

    action: FraudAction = FraudAction.FLAG


class EmailAliasCheck(_Check):
    """The friend's email is an alias of the referrer's: the same mailbox after normalisation
    (case, gmail dots, +tags of known providers), or the same local part before a ``+tag``
    on the same domain."""

    action: FraudAction = FraudAction.REJECT


class ConversionRateCheck(_Check):
    """The code's conversions / clicks over the last ``window_hours`` exceed ``max_rate``,
    judged only from ``min_clicks`` clicks on (from the hourly stats; no data, no signal)."""

    max_rate: float = Field(0.5, gt=0)
    min_clicks: int = Field(20, ge=1)
    window_hours: int = Field(24, ge=1, le=24 * 31)
    action: FraudAction = FraudAction.FLAG


class BlockedCountriesCheck(_Check):
    """The customer's country (ISO 3166-1 alpha-2, when the conversion carries one) is
    listed. Empty list: the check never fires."""

    countries: list[Country] = Field(default_factory=list, max_length=300)
    action: FraudAction = FraudAction.REJECT


class FraudSettings(BaseModel):
    """A programme's fraud checks; every field has a default, so ``{}`` is the standard set."""

    model_config = ConfigDict(extra="forbid")

    velocity_per_hour: VelocityCheck = Field(default_factory=VelocityCheck)
    same_ip_or_device: SameIpOrDeviceCheck = Field(default_factory=SameIpOrDeviceCheck)
    disposable_email: DisposableEmailCheck = Field(default_factory=DisposableEmailCheck)
    email_alias: EmailAliasCheck = Field(default_factory=EmailAliasCheck)
    conversion_rate: ConversionRateCheck = Field(default_factory=ConversionRateCheck)
    blocked_countries: BlockedCountriesCheck = Field(default_factory=BlockedCountriesCheck)
    extend_hold_by: Annotated[str, Field(max_length=40, examples=["P7D"]),
                              AfterValidator(_duration)] = Field(
        "P7D", description="How much longer an extend_hold signal makes the hold (ISO 8601).")


@dataclass(frozen=True)
class Observation:
    """What the checks look at; ``None`` means unknown, and an unknown never fires."""

    referrer_email: str | None = None
    friend_email: str | None = None
    ip_hash: str | None = None
    device_id: str | None = None
    referrer_ip_hashes: frozenset[str] = frozenset()
    referrer_device_ids: frozenset[str] = frozenset()
    country: str | None = None
    referrals_last_hour: int | None = None
    code_clicks: int | None = None
    code_conversions: int | None = None


@dataclass(frozen=True)
class FraudVerdict:
    signals: tuple[FraudSignal, ...] = ()

    @property
    def rejected_by(self) -> FraudSignal | None:
        return next((s for s in self.signals if s.action is FraudAction.REJECT), None)

    @property
    def reason(self) -> str | None:
        """``fraud:<signal>`` of the first rejecting signal, else None."""
        signal = self.rejected_by
        return f"fraud:{signal.signal}" if signal else None

    @property
    def flagged(self) -> bool:
        return any(s.action is FraudAction.FLAG for s in self.signals)

    @property
    def extends_hold(self) -> bool:
        return any(s.action is FraudAction.EXTEND_HOLD for s in self.signals)

    def status_of(self, status: str) -> str:
        """A rule's status after this verdict: a pending reward goes to review if flagged
        (rejections by fraud are decided by the rules, given :attr:`reason`)."""
        return "in_review" if status == "pending" and self.flagged else status


def _signal(name: str, value: float | str | bool, threshold: float | str | bool | None,
            action: FraudAction) -> FraudSignal:
    return FraudSignal(signal=name, value=value, threshold=threshold, action=action)


def check_velocity(cfg: VelocityCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled or obs.referrals_last_hour is None:
        return None
    if obs.referrals_last_hour > cfg.max_per_hour:
        return _signal("velocity_per_hour", obs.referrals_last_hour, cfg.max_per_hour, cfg.action)
    return None


def check_same_ip_or_device(cfg: SameIpOrDeviceCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled:
        return None
    same = [name for name, mine, theirs in (
        ("ip_hash", obs.ip_hash, obs.referrer_ip_hashes),
        ("device_id", obs.device_id, obs.referrer_device_ids)) if mine and mine in theirs]
    return _signal("same_ip_or_device", "+".join(same), None, cfg.action) if same else None


@cache
def _blocklist() -> frozenset[str]:
    from disposable_email_domains import blocklist  # a 10k-entry set: loaded on first use

    return frozenset(blocklist)


def disposable_domain(email: str) -> str | None:
    """The disposable-mail domain ``email`` is at (itself or a parent domain), or None."""
    labels = email.rpartition("@")[2].strip().lower().rstrip(".").split(".")
    blocked = _blocklist()
    for i in range(len(labels) - 1):
        if (domain := ".".join(labels[i:])) in blocked:
            return domain
    return None


def check_disposable_email(cfg: DisposableEmailCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled or not obs.friend_email:
        return None
    domain = disposable_domain(obs.friend_email)
    return _signal("disposable_email", domain, "disposable-email-domains", cfg.action) \
        if domain else None


def email_alias(a: str, b: str) -> str | None:
    """How ``a`` is an alias of ``b``: ``same_mailbox``, ``plus_tag``, or None."""
    if normalize_email(a) == normalize_email(b):
        return "same_mailbox"
    local_a, _, domain_a = a.strip().lower().rpartition("@")
    local_b, _, domain_b = b.strip().lower().rpartition("@")
    if domain_a == domain_b and local_a.split("+", 1)[0] == local_b.split("+", 1)[0]:
        return "plus_tag"
    return None


def check_email_alias(cfg: EmailAliasCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled or not obs.friend_email or not obs.referrer_email:
        return None
    how = email_alias(obs.friend_email, obs.referrer_email)
    return _signal("email_alias", how, None, cfg.action) if how else None


def check_conversion_rate(cfg: ConversionRateCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled or obs.code_clicks is None or obs.code_conversions is None:
        return None
    if obs.code_clicks < cfg.min_clicks:
        return None
    rate = obs.code_conversions / obs.code_clicks
    if rate > cfg.max_rate:
        return _signal("conversion_rate", round(rate, 4), cfg.max_rate, cfg.action)
    return None


def check_blocked_countries(cfg: BlockedCountriesCheck, obs: Observation) -> FraudSignal | None:
    if not cfg.enabled or not cfg.countries or not obs.country:
        return None
    country = obs.country.upper()
    if country in cfg.countries:
        return _signal("blocked_countries", country, ",".join(sorted(cfg.countries)),
                       cfg.action)
    return None


def evaluate(settings: FraudSettings, obs: Observation) -> FraudVerdict:
    """Run every check; the verdict holds the signals that fired, in a fixed order."""
    found = (
        check_email_alias(settings.email_alias, obs),
        check_same_ip_or_device(settings.same_ip_or_device, obs),
        check_blocked_countries(settings.blocked_countries, obs),
        check_disposable_email(settings.disposable_email, obs),
        check_velocity(settings.velocity_per_hour, obs),
        check_conversion_rate(settings.conversion_rate, obs),
    )
    return FraudVerdict(tuple(s for s in found if s is not None))
