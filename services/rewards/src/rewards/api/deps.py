"""Dependencies of the admin API: settings, database connection, admin authentication."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from referral_events import TopicRegistry
from referral_kit.http import ProblemError

from ..config import RewardsSettings
from ..dashboard.auth import SESSION_COOKIE, authenticate_cookie
from ..schemas import Problem

_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN")
_session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                        description="The dashboard's session (POST /dashboard/login); writes "
                                    "also need its X-CSRF-Token header.")


def get_settings(request: Request) -> RewardsSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_topics(request: Request) -> TopicRegistry:
    return request.app.state.topics  # type: ignore[no-any-return]


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with request.app.state.pool.acquire() as conn:
        yield conn


def require_admin(
    request: Request,
    settings: Annotated[RewardsSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session: Annotated[str | None, Depends(_session)],
) -> None:
    if credentials is None and session is not None:  # the dashboard, in a browser
        authenticate_cookie(request, settings, session)
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(401, "Authentication required",
                           "Send the admin token as 'Authorization: Bearer <ADMIN_TOKEN>'.",
                           field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    expected = settings.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise ProblemError(401, "Invalid admin token",
                           "The bearer token is not this platform's ADMIN_TOKEN.",
                           field="Authorization", headers={"WWW-Authenticate": "Bearer"})


Conn = Annotated[asyncpg.Connection, Depends(get_conn)]
Topics = Annotated[TopicRegistry, Depends(get_topics)]
Settings = Annotated[RewardsSettings, Depends(get_settings)]
Admin = [Depends(require_admin)]

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
PROBLEMS: dict[int | str, dict[str, object]] = {
    401: {**_PROBLEM, "description": "Missing or wrong admin token"},
    404: {**_PROBLEM, "description": "No such programme, referrer or reward"},
    422: {**_PROBLEM, "description": "Invalid request; `field` names the culprit"},
}
