"""Which programme an API key speaks for, and whether it may do what it asks.

Keys never travel: the registry carries only their SHA-256 (``key_hash``). Publishable
keys (``pk_…``) are public, live in browsers and may only record clicks; secret keys
(``sk_…``) are for the platform's servers and record conversions and reversals.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from referral_events import ProgramEntry
from referral_events.identity import key_hash


class KeyKind(StrEnum):
    PUBLISHABLE = "publishable"
    SECRET = "secret"  # noqa: S105 - a kind of key, not a key


class KeyRefused(Exception):
    """The key cannot be used here; ``authenticated`` tells 401 (who are you?) from 403."""

    def __init__(self, detail: str, *, authenticated: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.authenticated = authenticated


ProgramByKeyHash = Callable[[str], ProgramEntry | None]


def program_for_key(key: str | None, *, needs: KeyKind, lookup: ProgramByKeyHash,
                    header: str) -> ProgramEntry:
    """The active programme whose key of kind ``needs`` is ``key``.

    Raises :class:`KeyRefused`: not authenticated for a missing or unknown key; forbidden
    for a key of the wrong kind or of an inactive programme.
    """
    if not key or not key.strip():
        raise KeyRefused(f"{header} is missing; send the programme's {needs} key.",
                         authenticated=False)
    digest = key_hash(key.strip())
    program = lookup(digest)
    if program is None:
        raise KeyRefused(f"The key in {header} is not a key of any programme; check it was "
                         f"copied whole from the programme's settings.", authenticated=False)
    kind = KeyKind.SECRET if digest == program.secret_key_hash else KeyKind.PUBLISHABLE
    if kind is not needs:
        hint = ("a secret key must never be used in a browser; use the publishable key"
                if kind is KeyKind.SECRET else
                "a publishable key may only record clicks; call from your server with "
                "the secret key (Authorization: Bearer sk_…)")
        raise KeyRefused(f"This endpoint needs the {needs} key: {hint}.", authenticated=True)
    if not program.active:
        raise KeyRefused(f"Programme {program.program_id} is inactive; reactivate it to "
                         f"record events.", authenticated=True)
    return program
