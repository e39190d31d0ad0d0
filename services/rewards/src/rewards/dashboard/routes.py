"""``/dashboard``: the page, its login and logout, and the one JSON read only the page needs
(the review queue with referrer names). Programmes, figures, reviews and the CSV come from
the admin API itself, which accepts the session cookie (see ``auth``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from referral_kit.http import ProblemError

from ..api.deps import PROBLEMS, Admin, Conn, Settings
from . import auth
from .pages import SECURITY_HEADERS, STATIC_PATH, render
from .queue import ReviewQueue, review_queue

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_FORM_BYTES = 4096
_DASHBOARD_URL = re.compile(r"/dashboard(\?[A-Za-z0-9_.~%&=+-]*)?")

pages = APIRouter(prefix="/dashboard", include_in_schema=False)
data = APIRouter(prefix="/dashboard/api", dependencies=Admin, responses=PROBLEMS,
                 tags=["dashboard"])


def install(app: FastAPI) -> None:
    """Add the dashboard's routes and static files to the admin API ``app``."""
    app.include_router(pages)
    app.include_router(data)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard-static")


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemError(413, "Form too large", f"Send at most {MAX_FORM_BYTES} bytes.")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _next(target: str | None) -> str:
    """Where to go after logging in: the dashboard page asked for (its programme and range
    in the query), never another path or site."""
    if target and _DASHBOARD_URL.fullmatch(target):
        return target
    return "/dashboard"


@pages.get("")
async def dashboard(request: Request, settings: Settings) -> Response:
    session = auth.current_session(request, settings)
    if session is None:
        wanted = "/dashboard" + (f"?{request.url.query}" if request.url.query else "")
        return _redirect(f"/dashboard/login?{urlencode({'next': wanted})}")
    return render("dashboard.html", csrf=session.csrf)


@pages.get("/login")
async def login_page(request: Request, settings: Settings) -> Response:
    target = _next(request.query_params.get("next"))
    if auth.current_session(request, settings) is not None:
        return _redirect(target)
    notice = "You are logged out." if "out" in request.query_params else ""
    return render("login.html", error="", notice=notice, next=target)


@pages.post("/login")
async def login(request: Request, settings: Settings) -> Response:
    if not auth.same_origin(request):  # no logging in from another site's form
        return render("login.html", status_code=403, notice="", next="/dashboard",
                      error="Log in from this dashboard's own page.")
    form = await _form(request)
    target = _next(form.get("next"))
    token = form.get("token", "")
    if not token or not auth.token_matches(settings, token):
        return render("login.html", status_code=401, notice="", next=target,
                      error="That is not this platform's admin token (ADMIN_TOKEN).")
    response = _redirect(target)
    auth.set_session_cookie(response, request, settings)
    return response


@pages.post("/logout")
async def logout(request: Request, settings: Settings) -> Response:
    session = auth.current_session(request, settings)
    form = await _form(request)
    if session is not None and not (auth.same_origin(request)
                                    and auth.csrf_matches(session, form.get("csrf", ""))):
        return Response("Log out from the dashboard's own page.", status_code=403,
                        headers=SECURITY_HEADERS, media_type="text/plain")
    response = _redirect("/dashboard/login?out=1")
    auth.clear_session_cookie(response, request, settings)
    return response


@data.get("/programs/{program_id}/review-queue", response_model=ReviewQueue)
async def get_review_queue(
    program_id: str, conn: Conn,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReviewQueue:
    """Rewards waiting for a person (in review) and waiting out their hold (pending), oldest
    first, with who referred them; totals count up to 1,000."""
    if not await conn.fetchval("SELECT true FROM programs WHERE id = $1", program_id):
        raise ProblemError(404, "Programme not found", f"No programme with id {program_id!r}.")
    return await review_queue(conn, program_id, limit=limit)
