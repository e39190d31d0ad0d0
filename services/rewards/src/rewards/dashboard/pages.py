"""The dashboard's HTML: two templates filled with escaped values, sent with a
Content-Security-Policy that lets the page run scripts and styles from this origin only."""

from __future__ import annotations

import hashlib
import html
from functools import cache
from importlib import resources
from string import Template

from fastapi.responses import HTMLResponse

STATIC_PATH = "/dashboard/static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make form posts send Origin: null
    "Cache-Control": "no-store",
}


def _package_file(*parts: str) -> bytes:
    return resources.files("rewards.dashboard").joinpath(*parts).read_bytes()


@cache
def _template(name: str) -> Template:
    return Template(_package_file("templates", name).decode())


@cache
def asset_url(name: str) -> str:
    """``/dashboard/static/<name>?v=<content hash>``: browsers refetch only what changed."""
    digest = hashlib.sha256(_package_file("static", *name.split("/"))).hexdigest()[:12]
    return f"{STATIC_PATH}/{name}?v={digest}"


def render(name: str, *, status_code: int = 200, **values: str) -> HTMLResponse:
    """Template ``name`` with ``values`` escaped for HTML text and attributes; ``$asset_*``
    placeholders name static files (``$asset_dashboard_js`` → ``dashboard.js``)."""
    template = _template(name)
    assets = {key: asset_url(path) for key, path in {
        "asset_dashboard_js": "dashboard.js", "asset_dashboard_css": "dashboard.css",
        "asset_uplot_js": "vendor/uPlot.iife.min.js", "asset_uplot_css": "vendor/uPlot.min.css",
    }.items()}
    body = template.substitute(**assets, **{k: html.escape(v) for k, v in values.items()})
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)
