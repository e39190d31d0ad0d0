"""Identifiers and hashes that are part of the contract between services.

A click id embeds its referral code (``clk_<code>_<random>``) so a conversion that
carries only a click id can still be keyed, and so partitioned, by referral code.
Emails are compared after normalisation, and travel between services only as a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

CLICK_ID_PREFIX = "clk_"
# no "_": the code is split off at the last one
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_GMAIL_LIKE = frozenset({"gmail.com", "googlemail.com"})
_PLUS_TAG_DOMAINS = _GMAIL_LIKE | frozenset(
    {"outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com",
     "protonmail.com", "proton.me", "yahoo.com"}
)


def new_click_id(code: str) -> str:
    """A fresh, unguessable click id that carries ``code``."""
    token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(20))
    return f"{CLICK_ID_PREFIX}{code}_{token}"


def code_from_click_id(click_id: str) -> str | None:
    """The referral code inside a click id, or None when it is not one of ours."""
    if not click_id.startswith(CLICK_ID_PREFIX):
        return None
    code, sep, token = click_id[len(CLICK_ID_PREFIX):].rpartition("_")
    if not sep or not code or not token:
        return None
    return code


def normalize_email(email: str) -> str:
    """Canonical mailbox: lower-cased; +tags dropped where the provider ignores them;
    dots dropped in gmail-like local parts (``J.Doe+x@GMail.com`` → ``jdoe@gmail.com``)."""
    local, _, domain = email.strip().lower().rpartition("@")
    if not local:
        return email.strip().lower()
    if domain == "googlemail.com":
        domain = "gmail.com"
    if domain in _PLUS_TAG_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in _GMAIL_LIKE:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def email_hash(email: str) -> str:
    """SHA-256 of the normalised email: lets services compare mailboxes without sharing them."""
    return hashlib.sha256(normalize_email(email).encode()).hexdigest()


def key_hash(api_key: str) -> str:
    """SHA-256 of an API key as published in the registry (keys themselves never travel)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def ip_hash(ip: str, salt: str) -> str:
    """Salted HMAC of an IP address: equal IPs compare equal, the IP cannot be read back."""
    return hmac.new(salt.encode(), ip.encode(), hashlib.sha256).hexdigest()[:32]
