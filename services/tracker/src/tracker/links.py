"""Pure rules of a referral-link visit: where it lands, what the click records.

No framework and no I/O here: the HTTP layer translates requests into these calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from referral_events import AttributionModel

REF_PARAM = "ref"
CLICK_ID_PARAM = "rclid"
DEFAULT_CHANNEL = "link"
MAX_UTM_FIELDS = 10
MAX_UTM_VALUE = 200
MAX_USER_AGENT = 256

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHANNEL = re.compile(r"[^a-z0-9_.-]+")
_UTM_KEY = re.compile(r"^utm_[a-z0-9_]{1,36}$")


def is_well_formed_code(code: str) -> bool:
    """True when ``code`` could be a referral code at all (cheap check before any lookup)."""
    return bool(_CODE.match(code))


def channel_from(raw: str | None) -> str:
    """The sharing channel named by the link's ``ch`` parameter (``whatsapp``, ``qr``…),
    lower-cased and reduced to safe characters; ``link`` when absent or unusable."""
    if not raw:
        return DEFAULT_CHANNEL
    channel = _CHANNEL.sub("", raw.strip().lower())[:40]
    return channel or DEFAULT_CHANNEL


def utm_from(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``utm_*`` fields among ``params`` (first value wins, at most ten, values trimmed)."""
    utm: dict[str, str] = {}
    for key, value in params:
        key = key.lower()
        if not _UTM_KEY.match(key) or key in utm or not value.strip():
            continue
        if len(utm) == MAX_UTM_FIELDS:
            break
        utm[key] = value.strip()[:MAX_UTM_VALUE]
    return utm


def utm_from_url(url: str | None) -> dict[str, str]:
    """The ``utm_*`` fields in the query of ``url`` (empty for no or unparsable URL)."""
    if not url:
        return {}
    try:
        return utm_from(parse_qsl(urlsplit(url).query, keep_blank_values=False))
    except ValueError:
        return {}


def trim_user_agent(user_agent: str | None) -> str | None:
    """A user agent short enough to store (events keep at most 256 characters)."""
    if not user_agent or not user_agent.strip():
        return None
    return user_agent.strip()[:MAX_USER_AGENT]


def landing_url_for(landing_url: str, *, code: str, click_id: str | None,
                    utm: dict[str, str] | None = None) -> str:
    """The programme's landing URL with ``ref`` (and ``rclid`` when a click was recorded)
    added. The landing URL's own query and fragment are kept; ``utm_*`` fields from the
    link are passed on unless the landing URL sets them itself."""
    parts = urlsplit(landing_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in (REF_PARAM, CLICK_ID_PARAM)]
    present = {k for k, _ in query}
    query += [(k, v) for k, v in (utm or {}).items() if k not in present]
    query.append((REF_PARAM, code))
    if click_id:
        query.append((CLICK_ID_PARAM, click_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def keeps_earlier_referral(model: AttributionModel, *, earlier_program_id: str | None,
                           program_id: str) -> bool:
    """Whether the visitor's existing referral cookie must stay as it is.

    Under first-click the first referral of this programme keeps the credit, so its
    cookie is never overwritten; under last-click the newest link always wins. A cookie
    from another programme (or an unknown code) never blocks this programme's referral.
    """
    return model is AttributionModel.FIRST_CLICK and earlier_program_id == program_id
