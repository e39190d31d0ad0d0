"""Identifiers, referral codes and API keys: unguessable, from the secrets module."""

from __future__ import annotations

import secrets

# No 0/O, 1/I/L: codes are read aloud, typed from posters and printed on cards.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8  # 31**8 ≈ 8.5e11 codes: guessing one is hopeless at any rate limit


def new_referral_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def new_publishable_key() -> str:
    return f"pk_{secrets.token_urlsafe(24)}"


def new_secret_key() -> str:
    return f"sk_{secrets.token_urlsafe(32)}"
