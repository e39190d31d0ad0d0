"""/v1/programs/{id}/stats (the dashboard's figures) and /v1/programs/{id}/rewards.csv."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from referral_kit.http import ProblemError

from ..export import reward_csv
from ..stats import ProgramStats, program_stats
from .deps import PROBLEMS, Admin, Conn

router = APIRouter(prefix="/v1", dependencies=Admin, responses=PROBLEMS, tags=["stats"])
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
Status = Literal["pending", "in_review", "approved", "rejected", "reversed"]


def _date(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ProblemError(422, "Invalid date", f"{field}: {value!r} is not a date; use "
                           "YYYY-MM-DD, e.g. 2026-11-01.", field=field) from None


def _range(start_text: str | None, end_text: str | None, *, bounded: bool
           ) -> tuple[date | None, date | None]:
    start, end = _date(start_text, "from"), _date(end_text, "to")
    if start and end and end < start:
        raise ProblemError(422, "Invalid date range",
                           f"to ({end}) is before from ({start}); give to on or after from.",
                           field="to")
    if bounded and start and end and (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ProblemError(422, "Date range too long",
                           f"from {start} to {end} spans {(end - start).days + 1} days; at most "
                           f"{MAX_RANGE_DAYS} days can be asked at once. Move from closer to to.",
                           field="from")
    return start, end


async def _program(conn: Any, program_id: str) -> Any:
    program = await conn.fetchrow("SELECT id, currency FROM programs WHERE id = $1", program_id)
    if program is None:
        raise ProblemError(404, "Programme not found", f"No programme with id {program_id!r}.")
    return program


@router.get("/programs/{program_id}/stats", response_model=ProgramStats)
async def get_stats(
    program_id: str, conn: Conn,
    start: Annotated[str | None, Query(alias="from", description=(
        "First day (UTC), YYYY-MM-DD. Default: 29 days before `to`."))] = None,
    end: Annotated[str | None, Query(alias="to", description=(
        "Last day (UTC), included, YYYY-MM-DD. Default: today, or 29 days after `from`."))
    ] = None,
) -> ProgramStats:
    """The programme's figures for a date range (at most 366 days; default the last 30):
    KPIs, funnel, daily series, channels, top referrers, rejection reasons. Read from
    pre-aggregated stores only, so it is fast at any volume."""
    first, last = _range(start, end, bounded=True)
    if last is None:
        last = (first + timedelta(days=DEFAULT_RANGE_DAYS - 1) if first
                else datetime.now(UTC).date())
    if first is None:
        first = last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    program = await _program(conn, program_id)
    return await program_stats(conn, program, first, last)


@router.get("/programs/{program_id}/rewards.csv", response_class=StreamingResponse,
            responses={200: {"description": "One row per reward, header first.",
                             "content": {"text/csv": {}}}})
async def export_rewards(
    program_id: str, conn: Conn, request: Request,
    status: Status | None = None,
    start: Annotated[str | None, Query(alias="from", description=(
        "Created on or after this day (UTC), YYYY-MM-DD."))] = None,
    end: Annotated[str | None, Query(alias="to", description=(
        "Created on or before this day (UTC), YYYY-MM-DD."))] = None,
) -> StreamingResponse:
    """The programme's rewards as CSV (streamed, oldest first), with the filters of the
    rewards list. Cells that spreadsheets would run as formulas are prefixed with ``'``."""
    first, last = _range(start, end, bounded=False)
    await _program(conn, program_id)
    rows = reward_csv(request.app.state.pool, program_id, status=status, start=first, end=last)
    return StreamingResponse(rows, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="rewards-{program_id}.csv"'})
