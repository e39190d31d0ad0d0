"""POST /v1/clicks, /v1/conversions, /v1/reversals: 202 only once the broker has the event."""

from __future__ import annotations

from fastapi import APIRouter, Request
from referral_kit.http import ProblemError

from ..codes import CodeUnresolved, click_refusal
from ..links import DEFAULT_CHANNEL, channel_from, utm_from_url
from ..publisher import BrokerUnavailable
from ..schemas import ClickAccepted, ClickIn, ConversionIn, ReversalIn, WriteAccepted
from .deps import PublishableKeyProgram, Registry, Runtime, SecretKeyProgram, unavailable
from .routing import LeanRoute

# LeanRoute: same contract and OpenAPI, a leaner request path (see routing.py)
router = APIRouter(prefix="/v1", tags=["ingest"], route_class=LeanRoute)
BROKER_AWAY = "The event broker did not acknowledge the event in time."


@router.post("/clicks", status_code=202, response_model=ClickAccepted)
async def record_click(body: ClickIn, program: PublishableKeyProgram, registry: Registry,
                       runtime: Runtime, request: Request) -> ClickAccepted:
    """A click seen by the platform's page script; the code must be one of the key's
    programme. The same visitor (``visitor_id``, else IP + user agent) clicking the same code
    again within the dedupe window gets the first click's id and is not counted again."""
    refused = click_refusal(registry.code(body.code), program_id=program.program_id,
                            code=body.code)
    if refused:
        raise ProblemError(refused.status, refused.title, f"code: {refused.detail}",
                           field="code")
    ip = request.client.host if request.client else None
    user_agent = request.headers.get("user-agent")
    visitor_id = body.visitor_id or runtime.ingest.anonymous_visitor_id(ip, user_agent)
    try:
        outcome = await runtime.ingest.record_click(
            program_id=program.program_id, code=body.code,
            channel=channel_from(body.channel) if body.channel else DEFAULT_CHANNEL,
            utm=utm_from_url(body.url), visitor_id=visitor_id, ip=ip,
            user_agent=user_agent, via="api",
        )
    except BrokerUnavailable:
        raise unavailable(runtime, BROKER_AWAY) from None
    return ClickAccepted(click_id=outcome.click_id)


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
