"""Email addresses exactly as pydantic's ``EmailStr`` validates them, at a fraction of the cost.

``EmailStr`` runs email-validator's whole procedure for every address (~55 µs here): parsing
for display names and quoted parts, Unicode normalisation, and an IDNA/UTS-46 check of the
domain, which is most of it. Every conversion carries a customer email and every service
decodes it, so :data:`EmailAddress` takes a shortcut only where the outcome is certain: a
plain ASCII ``dot-atom@domain`` address gets its local part checked by the same rules
(RFC 5322 dot-atom, at most 64 characters, ``postmaster``-like names lower-cased) and its
domain checked by email-validator itself, cached per domain (domains repeat: most customers
share a few providers). Anything else (quotes, a display name, non-ASCII, a domain literal,
any address the shortcut would reject, a long one) takes ``EmailStr``'s own path, so its
answers and error messages are pydantic's. tests/contracts/test_emails.py compares the two
on generated and hand-picked addresses.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from email_validator import EmailNotValidError
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from email_validator.syntax import validate_email_domain_name
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email as pydantic_validate_email

# RFC 5322 atext (ASCII), dot-separated, no leading/trailing/double dot; then a domain of
# ASCII letters, digits, hyphens and dots (email-validator judges it).
_PLAIN = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
                    r"@([A-Za-z0-9.-]+)")
_LOCAL_MAX = 64
_SHORT = 200  # well under every length limit email-validator applies to a whole address


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The normalised domain, or None when email-validator refuses it (the slow path then
    raises its exact error)."""
    try:
        return validate_email_domain_name(domain, test_environment=False,
                                          globally_deliverable=True)["domain"]
    except EmailNotValidError:
        return None


def normalize_email(value: str) -> str:
    """``EmailStr``'s answer for ``value``: the normalised address, or its error."""
    plain = _PLAIN.fullmatch(value) if len(value) <= _SHORT else None
    if plain is not None:
        local, domain = plain.groups()
        normalized = _domain(domain)
        if len(local) <= _LOCAL_MAX and normalized is not None:
            if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
                local = local.lower()
            return f"{local}@{normalized}"
    return pydantic_validate_email(value)[1]


EmailAddress = Annotated[str, AfterValidator(normalize_email),
                         WithJsonSchema({"type": "string", "format": "email"})]
"""A drop-in for ``pydantic.EmailStr`` (same answers, errors and JSON schema)."""
