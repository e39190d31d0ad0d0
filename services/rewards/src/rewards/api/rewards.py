"""/v1/programs/{id}/rewards and the manual review actions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from referral_kit.http import ProblemError

from .. import lifecycle
from ..schemas import RejectBody, RewardRead
from .deps import PROBLEMS, Admin, Conn, Topics

router = APIRouter(prefix="/v1", dependencies=Admin, responses=PROBLEMS,
                   tags=["rewards"])
CONFLICT: dict[int | str, dict[str, object]] = {
    409: {**PROBLEMS[404], "description": "The reward's status does not allow the change"}}
Status = Literal["pending", "in_review", "approved", "rejected", "reversed"]


def _reward(row: Any) -> RewardRead:
    return RewardRead(**dict(row))


@router.get("/programs/{program_id}/rewards", response_model=list[RewardRead])
async def list_rewards(
    program_id: str, conn: Conn,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    created_before: Annotated[datetime | None,
                              Query(description="Page: created before this time.")] = None,
) -> list[RewardRead]:
    """Rewards of a programme, newest first, optionally of one status."""
    if not await conn.fetchval("SELECT true FROM programs WHERE id = $1", program_id):
        raise ProblemError(404, "Programme not found", f"No programme with id {program_id!r}.")
    rows = await conn.fetch(
        "SELECT * FROM rewards WHERE program_id = $1 AND ($2::text IS NULL OR status = $2)"
        " AND ($3::timestamptz IS NULL OR created_at < $3)"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        program_id, status, created_before, limit)
    return [_reward(r) for r in rows]


async def _transition(conn: Any, action: Any, reward_id: str, **kwargs: Any) -> RewardRead:
    try:
        async with conn.transaction():
            row = await action(conn, reward_id=reward_id, **kwargs)
    except lifecycle.RewardNotFound:
        raise ProblemError(404, "Reward not found", f"No reward with id {reward_id!r}.") from None
    except lifecycle.TransitionRefused as exc:
        raise ProblemError(409, "Reward cannot change", f"{exc}; only pending or in-review "
                           "rewards can be approved or rejected.", field="status") from None
    return _reward(row)


@router.post("/rewards/{reward_id}/approve", response_model=RewardRead, responses=CONFLICT)
async def approve_reward(reward_id: str, conn: Conn, topics: Topics) -> RewardRead:
    """Approve a pending or in-review reward now (writes the ledger credit)."""
    return await _transition(conn, lambda c, **kw: lifecycle.approve(c, topics, **kw), reward_id)


@router.post("/rewards/{reward_id}/reject", response_model=RewardRead, responses=CONFLICT)
async def reject_reward(reward_id: str, body: RejectBody, conn: Conn, topics: Topics
                        ) -> RewardRead:
    """Reject a pending or in-review reward with a reason the beneficiary will read."""
    return await _transition(conn, lambda c, **kw: lifecycle.reject(c, topics, **kw), reward_id,
                             reason=body.reason)
