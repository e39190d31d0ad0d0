"""/v1/programs and /v1/referrers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from referral_kit.http import ProblemError

from .. import programs as service
from ..schemas import (
    ProgramCreate,
    ProgramCreated,
    ProgramRead,
    ProgramUpdate,
    ReferrerCreate,
    ReferrerRead,
)
from .deps import PROBLEMS, Admin, Conn, Settings, Topics

router = APIRouter(prefix="/v1", dependencies=Admin, responses=PROBLEMS,
                   tags=["programmes"])


def _not_found(what: str, ident: str) -> ProblemError:
    return ProblemError(404, f"{what} not found", f"No {what.lower()} with id {ident!r}.")


def _program(row: Any) -> dict[str, Any]:
    return dict(row)


def _referrer(row: Any, settings: Any, counts: dict[str, int] | None = None,
              balance: dict[str, int] | None = None) -> ReferrerRead:
    return ReferrerRead(**dict(row), referral_url=f"{settings.tracker_public_url}/r/{row['code']}",
                        counts=counts or {}, balance=balance or {})


@router.post("/programs", status_code=status.HTTP_201_CREATED, response_model=ProgramCreated)
async def create_program(body: ProgramCreate, conn: Conn, topics: Topics) -> ProgramCreated:
    """Create a programme. The response holds the secret key once; store it."""
    row, secret_key = await service.create_program(conn=conn, topics=topics, body=body)
    return ProgramCreated(**_program(row), secret_key=secret_key)


@router.get("/programs", response_model=list[ProgramRead])
async def list_programs(conn: Conn, active: bool | None = None) -> list[ProgramRead]:
    """Every programme, oldest first; ``active`` filters on the programme's state."""
    rows = await conn.fetch("SELECT * FROM programs WHERE ($1::boolean IS NULL OR active = $1)"
                            " ORDER BY created_at, id", active)
    return [ProgramRead(**_program(row)) for row in rows]


@router.get("/programs/{program_id}", response_model=ProgramRead)
async def get_program(program_id: str, conn: Conn) -> ProgramRead:
    row = await service.get_program(conn=conn, program_id=program_id)
    if row is None:
        raise _not_found("Programme", program_id)
    return ProgramRead(**_program(row))


@router.patch("/programs/{program_id}", response_model=ProgramRead)
async def update_program(program_id: str, body: ProgramUpdate, conn: Conn,
                         topics: Topics) -> ProgramRead:
    row = await service.update_program(conn=conn, topics=topics, program_id=program_id, body=body)
    if row is None:
        raise _not_found("Programme", program_id)
    return ProgramRead(**_program(row))


@router.post("/programs/{program_id}/referrers", status_code=status.HTTP_201_CREATED,
             response_model=ReferrerRead,
             responses={200: {"description": "Already enrolled: the same referrer"}})
async def enrol_referrer(program_id: str, body: ReferrerCreate, conn: Conn, topics: Topics,
                         settings: Settings, response: Response) -> ReferrerRead:
    """Enrol a referrer; the same ``external_id`` again answers 200 with the same referrer."""
    if await service.get_program(conn=conn, program_id=program_id) is None:
        raise _not_found("Programme", program_id)
    row, created = await service.enrol_referrer(
        conn=conn, topics=topics, program_id=program_id, body=body,
        ip_hash_salt=settings.ip_hash_salt.get_secret_value())
    if not created:
        response.status_code = status.HTTP_200_OK
    return _referrer(row, settings)


@router.get("/referrers/{referrer_id}", response_model=ReferrerRead)
async def get_referrer(referrer_id: str, conn: Conn, settings: Settings) -> ReferrerRead:
    found = await service.referrer_summary(conn=conn, referrer_id=referrer_id)
    if found is None:
        raise _not_found("Referrer", referrer_id)
    row, counts, balance = found
    return _referrer(row, settings, counts, balance)
