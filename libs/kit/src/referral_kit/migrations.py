"""Versioned SQL migrations applied at start-up, once, under an advisory lock.

Files are ``NNNN_name.sql`` in a package directory; each runs in its own transaction with
its row in ``<schema>.schema_migrations``, so a crash mid-way leaves a consistent state and
concurrent starters wait for each other instead of racing.
"""

from __future__ import annotations

import re
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


async def migrate(dsn: str, *, schema: str, package: str,
                  directory: str = "migrations") -> list[str]:
    """Apply the pending migrations of ``package/directory`` to ``schema``; return their names."""
    if not _SCHEMA.fullmatch(schema):  # an identifier cannot be a bind parameter: vetted here
        raise ValueError(f"schema must match {_SCHEMA.pattern}, got {schema!r}")
    files = sorted(
        (int(m.group(1)), f.name, f.read_text())
        for f in resources.files(package).joinpath(directory).iterdir()
        if (m := _NAME.match(f.name))
    )
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(
            f'SELECT version FROM "{schema}".schema_migrations')}  # noqa: S608 (vetted)
        for version, name, sql in files:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                await conn.execute(sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version, name) '  # noqa: S608
                    "VALUES ($1, $2)",
                    version, name,
                )
            applied.append(name)
            log.info("migration applied", schema=schema, migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
        await conn.close()
    return applied
