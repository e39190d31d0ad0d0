"""GET/POST /unsubscribe: the page behind every email's unsubscribe link, and the RFC 8058
one-click endpoint mail clients POST to (body ``List-Unsubscribe=One-Click``).

GET only shows a confirmation form (link scanners follow GET links; they must not
unsubscribe anybody); POST unsubscribes, idempotently.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from .catalogue import MESSAGES
from .compose import choose_locale
from .unsubscribe import SuppressionList, TokenRefused, UnsubscribeTokens

log = structlog.get_logger(__name__)
Token = Annotated[str, Query(min_length=10, max_length=2000,
                             description="The signed token from the email's link.")]


def _page(title: str, body: str, locale: str, status: int = 200) -> HTMLResponse:
    html = (f"<!doctype html><html lang='{escape(locale)}'><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width'>"
            f"<title>{escape(title)}</title><body style='font-family:system-ui,sans-serif;"
            f"max-width:36rem;margin:3rem auto;padding:0 1rem;color:#1d2330'>"
            f"<h1>{escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(html, status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def unsubscribe_router(tokens: UnsubscribeTokens,
                       suppressions: Callable[[], SuppressionList | None]) -> APIRouter:
    router = APIRouter(tags=["unsubscribe"])

    def refused(exc: TokenRefused) -> HTMLResponse:
        texts = MESSAGES["en"]
        return _page(texts["unsubscribe.invalid.title"], f"<p>{escape(exc.detail)}</p>", "en",
                     status=410 if exc.expired else 400)

    @router.get("/unsubscribe", response_class=HTMLResponse)
    async def confirm_page(token: Token) -> HTMLResponse:
        """A form asking to confirm (nothing changes on GET)."""
        try:
            subscription = tokens.read(token)
        except TokenRefused as exc:
            return refused(exc)
        locale = choose_locale(subscription.locale)
        texts = MESSAGES[locale]
        program = subscription.program_name or subscription.program_id
        body = (f"<p>{escape(texts['unsubscribe.confirm.body'])}</p>"
                f"<p><strong>{escape(subscription.recipient)}</strong></p>"
                f"<form method='post'><input type='hidden' name='token' value='{escape(token)}'>"
                f"<button type='submit'>{escape(texts['unsubscribe.button'])}</button></form>")
        return _page(texts["unsubscribe.confirm.title"].format(program=program), body, locale)

    @router.post("/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(token: Token) -> HTMLResponse:
        """Unsubscribe the token's recipient from its category of the programme's emails
        (the form's button, or a mail client's RFC 8058 one-click POST)."""
        try:
            subscription = tokens.read(token)
        except TokenRefused as exc:
            return refused(exc)
        store = suppressions()
        if store is None:
            return _page("Service unavailable", "<p>Try again in a minute.</p>", "en", 503)
        if await store.add(subscription):
            log.info("recipient unsubscribed", program_id=subscription.program_id,
                     category=subscription.category.value)
        locale = choose_locale(subscription.locale)
        texts = MESSAGES[locale]
        program = subscription.program_name or subscription.program_id
        return _page(texts["unsubscribe.done.title"],
                     f"<p>{escape(texts['unsubscribe.done.body'].format(program=program))}</p>",
                     locale)

    return router
