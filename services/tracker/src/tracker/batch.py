"""POST /v1/batch: many events of one programme, one result per event, one broker round trip.

Each item is judged on its own: an invalid one is ``rejected`` (and not published) while the
others go on. Valid items are published together (all sends started, then every ack awaited
within one send timeout) and reported ``accepted`` only once the broker acknowledged them;
an item the broker did not acknowledge is ``unavailable`` and may be sent again. Repeats are
``duplicate``: a conversion or reversal this replica already recorded, or a click by the same
visitor of the same code within the dedupe window (with the first click's id).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from referral_events import ProgramEntry, utcnow
from referral_kit.registry_cache import RegistryCache

from . import metrics
from .codes import CodeUnresolved, click_refusal
from .ingest import Outgoing, ReferralIngest
from .links import DEFAULT_CHANNEL, channel_from, utm_from_url
from .recent import AcknowledgedMemory
from .schemas import (
    BatchClick,
    BatchConversion,
    BatchItem,
    BatchItemResult,
    BatchReversal,
    InvalidEvent,
    ItemProblem,
    ItemStatus,
)


@dataclass(slots=True)
class _Send:
    """An item being published; ``memory``/``memory_key`` remember it once acknowledged."""

    index: int
    kind: str
    outgoing: Outgoing
    memory: AcknowledgedMemory[str] | AcknowledgedMemory[bool] | None = None
    memory_key: str = ""
    click_id: str | None = None


@dataclass(slots=True)
class _Repeat:
    """An item whose write is in flight elsewhere (earlier in this batch, or another
    request): its answer is that write's outcome."""

    index: int
    kind: str
    write: asyncio.Future[str | None] | asyncio.Future[bool | None]


class BatchRecording:
    """Records one batch for ``program``; :meth:`run` returns the results in item order."""

    def __init__(self, *, ingest: ReferralIngest, program: ProgramEntry,
                 registry: RegistryCache, retry_after: int) -> None:
        self._ingest = ingest
        self._program = program
        self._registry = registry
        self._retry_after = retry_after
        self._results: list[BatchItemResult | None] = []
        self._now = utcnow()
        """The batch's arrival: one clock reading for all its items, not two per item."""
        self._sends: list[_Send] = []
        self._repeats: list[_Repeat] = []
        self._recorded: Counter[tuple[str, ItemStatus]] = Counter()
        """Items accepted or found duplicate, by kind: the per-kind counters' increments."""

    async def run(self, events: Sequence[BatchItem]) -> list[BatchItemResult]:
        self._results = [None] * len(events)
        for index, event in enumerate(events):
            if isinstance(event, InvalidEvent):
                field = f"events[{index}]" + (f".{event.field}" if event.field else "")
                self._reject(index, 422, "Invalid event",
                             f"{field}: {event.message}. Fix this field and send the event "
                             "again.", field)
            elif isinstance(event, BatchClick):
                self._click(index, event)
            elif isinstance(event, BatchConversion):
                self._conversion(index, event)
            elif isinstance(event, BatchReversal):
                self._write(index, "reversal", self._ingest.reversal_event(
                    program_id=self._program.program_id, reversal=event, now=self._now))
        await self._publish()
        await self._answer_repeats()
        results = [r for r in self._results if r is not None]
        assert len(results) == len(events), "every item gets exactly one result"
        self._update_metrics(results)
        return results

    def _count(self, kind: str, status: ItemStatus) -> None:
        self._recorded[kind, status] += 1

    def _update_metrics(self, results: list[BatchItemResult]) -> None:
        # Once per batch, not per item: a labelled counter costs a few µs per call.
        for status, count in Counter(result.status for result in results).items():
            metrics.BATCH_EVENTS.labels(status=status.value).inc(count)
        for (kind, status), count in self._recorded.items():
            if kind == "click":
                counter = metrics.CLICKS if status is ItemStatus.ACCEPTED else metrics.REPEAT_CLICKS
                counter.labels(via="batch").inc(count)
            else:
                counter = metrics.CONVERSIONS if kind == "conversion" else metrics.REVERSALS
                counter.labels(status=status.value).inc(count)

    def _click(self, index: int, click: BatchClick) -> None:
        program_id = self._program.program_id
        refused = click_refusal(self._registry.code(click.code), program_id=program_id,
                                code=click.code)
        if refused:
            field = f"events[{index}].code"
            self._reject(index, refused.status, refused.title, f"{field}: {refused.detail}",
                         field)
            return
        # The sender's own IP says nothing about the visitor: without a visitor id (or the
        # visitor's IP and user agent) a click has no visitor and is never a repeat.
        visitor_id = click.visitor_id or (
            self._ingest.anonymous_visitor_id(click.ip, click.user_agent)
            if click.user_agent else None)
        click_id, outgoing = self._ingest.click_event(
            program_id=program_id, code=click.code,
            channel=channel_from(click.channel) if click.channel else DEFAULT_CHANNEL,
            utm=utm_from_url(click.url), visitor_id=visitor_id, ip=click.ip,
            user_agent=click.user_agent, occurred_at=click.occurred_at, now=self._now)
        memory_key = self._ingest.repeat_key(click.code, visitor_id)
        send = _Send(index, "click", outgoing, click_id=click_id)
        if memory_key is None or self._claim(index, "click", self._ingest.clicks, memory_key):
            if memory_key is not None:
                send.memory, send.memory_key = self._ingest.clicks, memory_key
            self._sends.append(send)

    def _conversion(self, index: int, conversion: BatchConversion) -> None:
        try:
            outgoing = self._ingest.conversion_event(program_id=self._program.program_id,
                                                     conversion=conversion, now=self._now)
        except CodeUnresolved as exc:
            field = f"events[{index}].{exc.field}"
            self._reject(index, 422, "Invalid event", f"{field}: {exc.detail}", field)
            return
        self._write(index, "conversion", outgoing)

    def _write(self, index: int, kind: str, outgoing: Outgoing) -> None:
        memory = self._ingest.recent
        if self._claim(index, kind, memory, outgoing.idempotency_key):
            self._sends.append(_Send(index, kind, outgoing, memory, outgoing.idempotency_key))

    def _claim(self, index: int, kind: str,
               memory: AcknowledgedMemory[str] | AcknowledgedMemory[bool], key: str) -> bool:
        """True when this item is the one to publish ``key``; otherwise it is answered as
        a duplicate now, or once the write already in flight has ended."""
        value = memory.recall(key)
        if value is not None:
            self._results[index] = self._duplicate(index, kind, value)
            return False
        if (write := memory.pending(key)) is not None:
            self._repeats.append(_Repeat(index, kind, write))
            return False
        memory.begin(key)
        return True

    async def _publish(self) -> None:
        sends = self._sends
        try:
            outcomes = await self._ingest.publisher.publish_all(
                [send.outgoing.message() for send in sends])
        except BaseException:
            for send in sends:  # never leave a key in flight: its waiters would hang
                if send.memory is not None:
                    send.memory.settle(send.memory_key, None)
            raise
        for send, failure in zip(sends, outcomes, strict=True):
            acknowledged = failure is None
            if send.memory is not None:
                value = (send.click_id or True) if acknowledged else None
                send.memory.settle(send.memory_key, value)  # type: ignore[arg-type]
            if acknowledged:
                self._results[send.index] = BatchItemResult(
                    index=send.index, status=ItemStatus.ACCEPTED, click_id=send.click_id)
                self._count(send.kind, ItemStatus.ACCEPTED)
            else:
                self._results[send.index] = self._unavailable(send.index)

    async def _answer_repeats(self) -> None:
        for repeat in self._repeats:
            await asyncio.wait([repeat.write])  # settled by now if it was this batch's own
            value = repeat.write.result()
            self._results[repeat.index] = (
                self._duplicate(repeat.index, repeat.kind, value) if value is not None
                else self._unavailable(repeat.index))

    def _duplicate(self, index: int, kind: str, value: str | bool) -> BatchItemResult:
        self._count(kind, ItemStatus.DUPLICATE)
        click_id = value if kind == "click" and isinstance(value, str) else None
        return BatchItemResult(index=index, status=ItemStatus.DUPLICATE, click_id=click_id)

    def _unavailable(self, index: int) -> BatchItemResult:
        return BatchItemResult(index=index, status=ItemStatus.UNAVAILABLE, error=ItemProblem(
            title="Service unavailable", status=503, retry_after=self._retry_after,
            detail="The event broker did not acknowledge this event in time; it was not "
                   f"recorded. Send it again in {self._retry_after} s (it is idempotent)."))

    def _reject(self, index: int, status: int, title: str, detail: str, field: str) -> None:
        self._results[index] = BatchItemResult(
            index=index, status=ItemStatus.REJECTED,
            error=ItemProblem(title=title, status=status, detail=detail, field=field))
