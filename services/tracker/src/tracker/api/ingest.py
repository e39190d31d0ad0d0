"""POST /v1/clicks, /v1/conversions, /v1/reversals: 202 only once the broker has the event."""

from __future__ import annotations

from fastapi import APIRouter, Request
from referral_kit.http import ProblemError

from ..codes import CodeUnresolved
from ..links import DEFAULT_CHANNEL, channel_from, utm_from_url
from ..publisher import BrokerUnavailable
from ..schemas import ClickAccepted, ClickIn, ConversionIn, ReversalIn, WriteAccepted
from .deps import PublishableKeyProgram, Registry, Runtime, SecretKeyProgram, unavailable

router = APIRouter(prefix="/v1", tags=["ingest"])
BROKER_AWAY = "The event broker did not acknowledge the event in time."


@router.post("/clicks", status_code=202, response_model=ClickAccepted)
async def record_click(body: ClickIn, program: PublishableKeyProgram, registry: Registry,
                       runtime: Runtime, request: Request) -> ClickAccepted:
    """A click seen by the platform's page script; the code must be one of the key's programme."""
    entry = registry.code(body.code)
    if entry is not None and entry.program_id != program.program_id:
        raise ProblemError(403, "Forbidden",
                           f"Referral code {body.code!r} belongs to another programme than "
                           "this publishable key; use that programme's key.", field="code")
    if entry is None or not entry.active:
        raise ProblemError(422, "Unknown referral code",
                           f"code: {body.code!r} is not an active referral code of programme "
                           f"{program.program_id}; send the code from the referral link.",
                           field="code")
    try:
        click_id = await runtime.ingest.record_click(
            program_id=program.program_id, code=body.code,
            channel=channel_from(body.channel) if body.channel else DEFAULT_CHANNEL,
            utm=utm_from_url(body.url), visitor_id=body.visitor_id,
            ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"), via="api",
        )
    except BrokerUnavailable:
        raise unavailable(runtime, BROKER_AWAY) from None
    return ClickAccepted(click_id=click_id)


@router.post("/conversions", status_code=202, response_model=WriteAccepted)
async def record_conversion(body: ConversionIn, program: SecretKeyProgram,
                            runtime: Runtime) -> WriteAccepted:
    """An order from the checkout; accepted whatever its code (attribution decides)."""
    try:
        status = await runtime.ingest.record_conversion(program_id=program.program_id,
                                                        conversion=body)
    except CodeUnresolved as exc:
        raise ProblemError(422, "Invalid request", f"{exc.field}: {exc.detail}",
                           field=exc.field) from None
    except BrokerUnavailable:
        raise unavailable(runtime, BROKER_AWAY) from None
    return WriteAccepted(status=status)


@router.post("/reversals", status_code=202, response_model=WriteAccepted)
async def record_reversal(body: ReversalIn, program: SecretKeyProgram,
                          runtime: Runtime) -> WriteAccepted:
    """A refund, chargeback or cancellation of an earlier conversion of this programme."""
    try:
        status = await runtime.ingest.record_reversal(program_id=program.program_id,
                                                      reversal=body)
    except BrokerUnavailable:
        raise unavailable(runtime, BROKER_AWAY) from None
    return WriteAccepted(status=status)
