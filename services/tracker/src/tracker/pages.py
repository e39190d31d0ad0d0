"""The few HTML pages a person may see on the tracker (everything else redirects)."""

from __future__ import annotations

from html import escape

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}h1{{font-size:1.4rem}}p{{line-height:1.5}}</style></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


def unknown_link_page(code: str) -> str:
    """Shown for a referral code that does not exist or is no longer active."""
    return _PAGE.format(
        title="This referral link is not valid",
        message=(f"The referral code <code>{escape(code[:64])}</code> is unknown or no longer "
                 "active. Ask the person who shared it for a new link."),
    )


def unavailable_page() -> str:
    """Shown while the tracker cannot read programmes (start-up, broker away)."""
    return _PAGE.format(
        title="Please try again in a moment",
        message="Referral links are briefly unavailable. Reload this page in a few seconds.",
    )
