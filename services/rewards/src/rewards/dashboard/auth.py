"""Dashboard sessions: the admin token, given once to the login form, becomes a signed,
expiring session in an HttpOnly, SameSite=Strict cookie.

* The cookie holds no secret: ``<payload>.<signature>``, the payload (issue and expiry times,
  a random CSRF token) signed with HMAC-SHA256 under a key derived from ``ADMIN_TOKEN``.
  Every replica can check it without shared state, and changing the token ends every
  session at once.
* Writes (any method but GET/HEAD/OPTIONS) authenticated by the cookie also need the
  session's CSRF token in ``X-CSRF-Token`` (the page has it; another site cannot read it),
  and, when the browser sends ``Origin``, an origin naming this host. SameSite=Strict
  already keeps the cookie off cross-site requests; these are the second lock.
* ``Secure`` is set when the request came over https (directly or through a proxy uvicorn
  trusts) and always when ENVIRONMENT=production; plain http on 127.0.0.1 keeps working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response
from referral_kit.http import ProblemError

from ..config import RewardsSettings

SESSION_COOKIE = "rewards_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_KEY_PURPOSE = b"rewards-dashboard-session-v1"


@dataclass(frozen=True)
class DashboardSession:
    issued_at: int
    expires_at: int
    csrf: str


def _key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(admin_token: str, *, lifetime_seconds: int, now: float | None = None
          ) -> tuple[str, DashboardSession]:
    """A new session and its cookie value."""
    issued = int(now if now is not None else time.time())
    session = DashboardSession(issued, issued + lifetime_seconds, secrets.token_urlsafe(24))
    payload = _b64(json.dumps({"iat": session.issued_at, "exp": session.expires_at,
                               "csrf": session.csrf}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(admin_token), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}", session


def read(admin_token: str, value: str | None, *, now: float | None = None
         ) -> DashboardSession | None:
    """The session in a cookie value, or None when it is missing, forged or expired."""
    if not value or value.count(".") != 1 or len(value) > 512:
        return None
    payload, signature = value.split(".")
    expected = _b64(hmac.new(_key(admin_token), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        fields = json.loads(_unb64(payload))
        session = DashboardSession(int(fields["iat"]), int(fields["exp"]), str(fields["csrf"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at <= (now if now is not None else time.time()):
        return None
    return session


def token_matches(settings: RewardsSettings, candidate: str) -> bool:
    expected = settings.admin_token.get_secret_value().encode()
    return hmac.compare_digest(candidate.encode(), expected)


def uses_https(request: Request, settings: RewardsSettings) -> bool:
    return request.url.scheme == "https" or settings.environment == "production"


def set_session_cookie(response: Response, request: Request, settings: RewardsSettings
                       ) -> DashboardSession:
    lifetime = int(settings.dashboard_session_hours * 3600)
    value, session = issue(settings.admin_token.get_secret_value(), lifetime_seconds=lifetime)
    response.set_cookie(SESSION_COOKIE, value, max_age=lifetime, path="/", httponly=True,
                        samesite="strict", secure=uses_https(request, settings))
    return session


def clear_session_cookie(response: Response, request: Request, settings: RewardsSettings
                         ) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=uses_https(request, settings))


def current_session(request: Request, settings: RewardsSettings) -> DashboardSession | None:
    return read(settings.admin_token.get_secret_value(), request.cookies.get(SESSION_COOKIE))


def same_origin(request: Request) -> bool:
    """False only when the browser names another origin (or an opaque one) in ``Origin``."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


def csrf_matches(session: DashboardSession, sent: str) -> bool:
    return hmac.compare_digest(sent.encode(), session.csrf.encode())


def authenticate_cookie(request: Request, settings: RewardsSettings, value: str) -> None:
    """Accept the request on its session cookie, or raise the problem that says why not."""
    session = read(settings.admin_token.get_secret_value(), value)
    if session is None:
        raise ProblemError(401, "Session expired", "The dashboard session is missing, expired "
                           "or signed with another admin token; log in again at /dashboard/login.",
                           field="Cookie")
    if request.method in SAFE_METHODS:
        return
    if not (same_origin(request) and csrf_matches(session, request.headers.get(CSRF_HEADER, ""))):
        raise ProblemError(403, "Cross-site request refused",
                           f"A change made with the dashboard's session cookie needs the "
                           f"page's {CSRF_HEADER} header and a same-origin Origin; reload "
                           f"the dashboard and try again.", field=CSRF_HEADER)
