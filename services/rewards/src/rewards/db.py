"""PostgreSQL connections (asyncpg) with JSON codecs, search path on the ``rewards`` schema."""

from __future__ import annotations

import json

import asyncpg

SCHEMA = "rewards"


async def _init(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init,
        server_settings={"search_path": f"{SCHEMA},public", "application_name": "rewards"},
    )
