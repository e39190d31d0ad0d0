"""Dependencies shared by the tracker's views: the runtime, the registry, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from referral_events import ProgramEntry
from referral_kit.http import ProblemError
from referral_kit.registry_cache import RegistryCache

from ..keys import KeyKind, KeyRefused, program_for_key
from ..runtime import TrackerRuntime


def _runtime(request: Request) -> TrackerRuntime:
    runtime: TrackerRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[TrackerRuntime, Depends(_runtime)]


def unavailable(runtime: TrackerRuntime, detail: str) -> ProblemError:
    """503 with Retry-After: the caller should send the same request again later."""
    seconds = runtime.settings.retry_after_seconds
    return ProblemError(503, "Service unavailable",
                        f"{detail} Nothing was recorded; send the same request again in "
                        f"{seconds} s (it is idempotent).",
                        headers={"Retry-After": str(seconds)})


def _registry(runtime: Runtime) -> RegistryCache:
    if runtime.registry is None:
        raise unavailable(runtime, "The tracker is still loading programmes from the broker.")
    return runtime.registry


Registry = Annotated[RegistryCache, Depends(_registry)]


def _refused(exc: KeyRefused, *, scheme: str) -> ProblemError:
    if exc.authenticated:
        return ProblemError(403, "Forbidden", exc.detail)
    return ProblemError(401, "Unauthorized", exc.detail, headers={"WWW-Authenticate": scheme})


def _secret_key_program(
    registry: Registry,
    authorization: Annotated[str | None, Header()] = None,
) -> ProgramEntry:
    key = None
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(401, "Unauthorized",
                               "Authorization must be 'Bearer <secret key>' (sk_…).",
                               headers={"WWW-Authenticate": "Bearer"})
        key = token
    try:
        return program_for_key(key, needs=KeyKind.SECRET, lookup=registry.program_for_key_hash,
                               header="Authorization")
    except KeyRefused as exc:
        raise _refused(exc, scheme="Bearer") from None


def _publishable_key_program(
    registry: Registry,
    x_publishable_key: Annotated[str | None, Header()] = None,
) -> ProgramEntry:
    try:
        return program_for_key(x_publishable_key, needs=KeyKind.PUBLISHABLE,
                               lookup=registry.program_for_key_hash, header="X-Publishable-Key")
    except KeyRefused as exc:
        raise _refused(exc, scheme="X-Publishable-Key") from None


SecretKeyProgram = Annotated[ProgramEntry, Depends(_secret_key_program)]
PublishableKeyProgram = Annotated[ProgramEntry, Depends(_publishable_key_program)]
