"""Dependencies shared by the tracker's views: the runtime, the registry, API keys and
their event budgets."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from referral_events import ProgramEntry
from referral_kit.http import ProblemError
from referral_kit.registry_cache import RegistryCache

from .. import metrics
from ..keys import KeyKind, KeyRefused, program_for_key
from ..rate_limits import RateLimited
from ..runtime import TrackerRuntime


async def _runtime(request: Request) -> TrackerRuntime:
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


async def _registry(runtime: Runtime) -> RegistryCache:
    if runtime.registry is None:
        raise unavailable(runtime, "The tracker is still loading programmes from the broker.")
    return runtime.registry


Registry = Annotated[RegistryCache, Depends(_registry)]


def _refused(exc: KeyRefused, *, scheme: str) -> ProblemError:
    if exc.authenticated:
        return ProblemError(403, "Forbidden", exc.detail)
    return ProblemError(401, "Unauthorized", exc.detail, headers={"WWW-Authenticate": scheme})


async def _secret_key_program(
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


async def _publishable_key_program(
    registry: Registry,
    x_publishable_key: Annotated[str | None, Header()] = None,
) -> ProgramEntry:
    try:
        return program_for_key(x_publishable_key, needs=KeyKind.PUBLISHABLE,
                               lookup=registry.program_for_key_hash, header="X-Publishable-Key")
    except KeyRefused as exc:
        raise _refused(exc, scheme="X-Publishable-Key") from None


def charge(runtime: TrackerRuntime, program: ProgramEntry, kind: KeyKind, events: int) -> None:
    """Take ``events`` from the key's budget, or refuse the request with 429 + Retry-After."""
    try:
        runtime.budgets[kind].spend(f"{kind}:{program.program_id}", events)
    except RateLimited as exc:
        metrics.RATE_LIMITED.labels(key_kind=kind.value).inc()
        if exc.never_fits:
            detail = (f"This request carries {exc.cost} events, more than the whole budget "
                      f"of this {kind} key ({exc.budget} events per tracker replica); send "
                      f"at most {exc.budget.events} events per request.")
        else:
            detail = (f"This {kind} key used up its budget of {exc.budget} events (per "
                      f"tracker replica). Nothing was recorded; send again in "
                      f"{exc.retry_after} s and spread the events out over time.")
        raise ProblemError(429, "Too many requests", detail,
                           headers={"Retry-After": str(exc.retry_after)}) from None


def _charged_secret_key_program(program: Annotated[ProgramEntry, Depends(_secret_key_program)],
                                runtime: Runtime) -> ProgramEntry:
    charge(runtime, program, KeyKind.SECRET, 1)
    return program


def _charged_publishable_key_program(
    program: Annotated[ProgramEntry, Depends(_publishable_key_program)], runtime: Runtime,
) -> ProgramEntry:
    charge(runtime, program, KeyKind.PUBLISHABLE, 1)
    return program


SecretKeyProgram = Annotated[ProgramEntry, Depends(_charged_secret_key_program)]
"""The programme of the request's secret key, one event charged to its budget."""
PublishableKeyProgram = Annotated[ProgramEntry, Depends(_charged_publishable_key_program)]
"""The programme of the request's publishable key, one event charged to its budget."""
BatchSenderProgram = Annotated[ProgramEntry, Depends(_secret_key_program)]
"""The programme of the request's secret key; the view charges one event per item."""
