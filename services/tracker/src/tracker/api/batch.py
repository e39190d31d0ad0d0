"""POST /v1/batch: up to 1,000 mixed events of one programme, one result per event.

Status of the answer:
- 202 when every item has its final answer (accepted, duplicate or rejected), and also when
  some items are ``unavailable`` but others were accepted: the answer then carries
  ``Retry-After`` and the client re-sends only the unavailable items.
- 503 + Retry-After (problem details, with the same ``counts`` and ``results``) when items
  were unavailable and none was accepted: nothing of this batch was published.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Response
from referral_kit.http import problem

from ..batch import BatchRecording
from ..keys import KeyKind
from ..schemas import BatchAnswer, BatchIn, ItemStatus
from .deps import BatchSenderProgram, Registry, Runtime, charge
from .routing import LeanRoute

# LeanRoute: same contract and OpenAPI, a leaner request path (see routing.py)
router = APIRouter(prefix="/v1", tags=["ingest"], route_class=LeanRoute)


@router.post(
    "/batch", status_code=202, response_model=BatchAnswer, response_model_exclude_none=True,
    responses={503: {"description": "The broker acknowledged none of the valid events; "
                                    "problem details carrying the per-item results."}},
)
async def record_batch(body: BatchIn, program: BatchSenderProgram, registry: Registry,
                       runtime: Runtime) -> Response:
    """Record many clicks, conversions and reversals at once (secret key). Each item is
    validated on its own; only valid items are published, all together, and each is
    reported ``accepted`` only once the broker acknowledged it. Costs one event of the
    key's budget per item."""
    charge(runtime, program, KeyKind.SECRET, len(body.events))
    retry_after = runtime.settings.retry_after_seconds
    results = await BatchRecording(ingest=runtime.ingest, program=program, registry=registry,
                                   retry_after=retry_after).run(body.events)
    tally = Counter(result.status for result in results)
    answer = BatchAnswer(counts={status: tally[status] for status in ItemStatus},
                         results=results)
    unavailable = tally[ItemStatus.UNAVAILABLE]
    headers = {"Retry-After": str(retry_after)} if unavailable else None
    if unavailable and not tally[ItemStatus.ACCEPTED]:
        return problem(
            503, "Service unavailable",
            f"The event broker did not acknowledge the batch in time: {unavailable} event(s) "
            f"were not recorded (see results). Send the same batch again in {retry_after} s "
            "(it is idempotent).",
            headers=headers, **answer.model_dump(mode="json", exclude_none=True))
    # Serialised here, once, rather than re-validated by the response model.
    return Response(answer.model_dump_json(exclude_none=True), status_code=202,
                    media_type="application/json", headers=headers)
