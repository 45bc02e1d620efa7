"""SQL of time-of-use parameter sets: versions added, one looked up, all listed."""

from __future__ import annotations

import json

import asyncpg

from headend.store.results import row, rows

COLUMNS = "s.id, s.name, s.version, s.definition, t.name AS tariff, s.created_by, s.created_at"


async def add_version(
    conn: asyncpg.Connection, name: str, definition: dict[str, object], operator: str, tariff_id: int | None
) -> int:
    """Add the next version of set ``name`` (1 for a new name) under ``operator``; the version.

    Locks the name's versions so that two adds at once give 1 and 2, never the same number twice."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tou_parameter_sets:' || $1))", name)
    version = int(
        await conn.fetchval(
            "INSERT INTO tou_parameter_sets (name, version, definition, tariff_id, created_by)"
            " SELECT $1, coalesce(max(version), 0) + 1, $2::jsonb, $3, $4"
            " FROM tou_parameter_sets WHERE name = $1 RETURNING version",
            name,
            json.dumps(definition),
            tariff_id,
            operator,
        )
    )
    return version


async def set_version(conn: asyncpg.Connection, name: str, version: int | None) -> asyncpg.Record | None:
    """``id, name, version, definition (JSON text), tariff, created_by, created_at`` of a version of
    a set (the latest when ``version`` is None), or None."""
    return await row(
        conn,
        f"SELECT {COLUMNS} FROM tou_parameter_sets s LEFT JOIN tariffs t ON t.id = s.tariff_id"
        " WHERE s.name = $1 AND ($2::integer IS NULL OR s.version = $2)"
        " ORDER BY s.version DESC LIMIT 1",
        name,
        version,
    )


async def latest_versions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The latest version of every set, by name (columns as :func:`set_version`)."""
    return await rows(
        conn,
        f"SELECT DISTINCT ON (s.name) {COLUMNS} FROM tou_parameter_sets s"
        " LEFT JOIN tariffs t ON t.id = s.tariff_id ORDER BY s.name, s.version DESC",
    )
