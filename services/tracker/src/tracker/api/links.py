"""GET /r/{code}: a friend opens a referral link and lands on the programme's page."""

from __future__ import annotations

import secrets

import structlog
from crawlerdetect import CrawlerDetect
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from referral_events import ProgramEntry
from referral_kit.registry_cache import RegistryCache

from .. import metrics
from ..links import (
    channel_from,
    is_well_formed_code,
    keeps_earlier_referral,
    landing_url_for,
    utm_from,
)
from ..pages import unavailable_page, unknown_link_page
from ..publisher import BrokerUnavailable
from .deps import Runtime

log = structlog.get_logger(__name__)
router = APIRouter(tags=["links"])

CODE_COOKIE = "ref_code"
CLICK_COOKIE = "ref_click"
VISITOR_COOKIE = "ref_vid"
VISITOR_COOKIE_DAYS = 365
_crawlers = CrawlerDetect()


def _active_programme(registry: RegistryCache, code: str) -> ProgramEntry | None:
    if not is_well_formed_code(code):
        return None
    entry = registry.code(code)
    if entry is None or not entry.active:
        return None
    program = registry.program(entry.program_id)
    return program if program is not None and program.active else None


@router.head("/r/{code}", include_in_schema=False)
@router.get("/r/{code}", response_class=RedirectResponse, status_code=302)
async def follow_referral_link(code: str, request: Request, runtime: Runtime) -> Response:
    """302 to the landing URL with ``ref`` and ``rclid``; records the click (not for
    crawlers or HEAD) and sets the referral cookies; unknown code → 404 page."""
    no_store = {"Cache-Control": "no-store"}
    registry = runtime.registry
    if registry is None:
        headers = {**no_store, "Retry-After": str(runtime.settings.retry_after_seconds)}
        return HTMLResponse(unavailable_page(), status_code=503, headers=headers)
    program = _active_programme(registry, code)
    if program is None:
        metrics.UNKNOWN_CODES.inc()
        return HTMLResponse(unknown_link_page(code), status_code=404, headers=no_store)

    query = request.query_params
    utm = utm_from(query.multi_items())
    user_agent = request.headers.get("user-agent", "")
    if request.method == "HEAD" or _crawlers.is_crawler(user_agent):
        # Link previews and crawlers follow links too: send them on, but they are no click.
        metrics.BOT_VISITS.inc()
        target = landing_url_for(str(program.landing_url), code=code, click_id=None, utm=utm)
        return RedirectResponse(target, status_code=302, headers=no_store)

    ip = request.client.host if request.client else None
    # The visitor is their cookie, else (first visit, or cookies refused) a hash of IP and
    # user agent, which becomes their cookie: a repeat within the dedupe window keeps its
    # first click and is not counted, whichever replica it reaches.
    visitor_id = (request.cookies.get(VISITOR_COOKIE)
                  or runtime.ingest.anonymous_visitor_id(ip, user_agent)
                  or secrets.token_urlsafe(16))
    click_id: str | None
    try:
        outcome = await runtime.ingest.record_click(
            program_id=program.program_id, code=code, channel=channel_from(query.get("ch")),
            utm=utm, visitor_id=visitor_id, ip=ip, user_agent=user_agent, via="link",
        )
        click_id = outcome.click_id
    except BrokerUnavailable:
        # The visitor still lands (losing a customer is worse than losing a count), but
        # without a click id: no id is handed out for a click the platform never recorded.
        metrics.LOST_CLICKS.inc()
        log.warning("click not recorded; redirecting without click id", code=code)
        click_id = None

    target = landing_url_for(str(program.landing_url), code=code, click_id=click_id, utm=utm)
    response = RedirectResponse(target, status_code=302, headers=no_store)
    _set_cookies(response, request, runtime, program, code=code, click_id=click_id,
                 visitor_id=visitor_id)
    return response


def _set_cookies(response: Response, request: Request, runtime: Runtime, program: ProgramEntry,
                 *, code: str, click_id: str | None, visitor_id: str) -> None:
    """First-party cookies the checkout reads back (code, click id) plus a visitor id."""
    common = {"path": "/", "samesite": "lax", "secure": request.url.scheme == "https",
              "domain": runtime.settings.cookie_domain}
    response.set_cookie(VISITOR_COOKIE, visitor_id, max_age=VISITOR_COOKIE_DAYS * 86400,
                        httponly=True, **common)  # type: ignore[arg-type]
    earlier = request.cookies.get(CODE_COOKIE)
    earlier_entry = runtime.registry.code(earlier) if earlier and runtime.registry else None
    if keeps_earlier_referral(program.attribution_model, program_id=program.program_id,
                              earlier_program_id=earlier_entry.program_id if earlier_entry
                              else None):
        return
    # Readable by the shop's own scripts (not httponly): they prefill coupon fields from it.
    max_age = program.attribution_window_days * 86400
    response.set_cookie(CODE_COOKIE, code, max_age=max_age, **common)  # type: ignore[arg-type]
    if click_id:
        response.set_cookie(CLICK_COOKIE, click_id, max_age=max_age,
                            **common)  # type: ignore[arg-type]
    else:
        response.delete_cookie(CLICK_COOKIE, path="/", domain=runtime.settings.cookie_domain)
