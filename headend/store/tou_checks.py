"""SQL of time-of-use schedule checks (``headend params check``): the meters a check covers with
their tariff, the reads the desk asks of the daemon and what the daemon read back (migration 0073)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from headend.store.results import Queryable, rows

_TARGETS = (
    "SELECT m.id AS meter_id, m.address, c.name AS channel, t.id AS tariff_id, t.name AS tariff,"
    " coalesce((SELECT r.definition FROM tariff_revisions r WHERE r.tariff_id = t.id"
    "  AND r.effective_from <= now() ORDER BY r.effective_from DESC LIMIT 1), t.definition)::text"
    " AS definition"
    " FROM meters m JOIN channels c ON c.id = m.channel_id"
    " JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL"
    " JOIN accounts a ON a.id = x.account_id JOIN tariffs t ON t.id = a.tariff_id"
    " WHERE t.kind = 'tou' AND m.protocol = 'dlt645-2007' AND m.removed_at IS NULL"
    " AND ($1::text IS NULL OR t.name = $1)"
    " AND (cardinality($2::text[]) = 0 OR c.name = ANY($2::text[]))"
    " AND (cardinality($3::text[]) = 0 OR EXISTS (SELECT 1 FROM area_members g JOIN areas r"
    "  ON r.id = g.area_id WHERE g.meter_id = m.id AND r.name = ANY($3::text[])"
    "  AND g.valid_from <= current_date AND (g.valid_to IS NULL OR g.valid_to > current_date)))"
    " ORDER BY m.address"
)


async def check_targets(
    conn: Queryable, tariff: str | None, channels: Sequence[str], areas: Sequence[str]
) -> list[asyncpg.Record]:
    """``meter_id, address, channel, tariff_id, tariff, definition`` (the tariff's definition in
    effect now, JSON text) of the installed DL/T 645-2007 meters whose account has a time-of-use
    tariff, narrowed to a tariff, channels and transformer areas (empty: all)."""
    return await rows(conn, _TARGETS, tariff, list(channels), list(areas))


async def ask_reads(conn: asyncpg.Connection, wanted: Sequence[tuple[int, str]]) -> None:
    """Ask the daemon to read back the schedule of meters: ``(meter_id, definition)``, the set their
    tariff implies (JSON text), which names the items to read."""
    await conn.executemany(
        "INSERT INTO tou_checks (meter_id, requested_at, definition) VALUES ($1, now(), $2::jsonb)"
        " ON CONFLICT (meter_id) DO UPDATE SET requested_at = now(), definition = EXCLUDED.definition",
        list(wanted),
    )


async def read_backs(conn: Queryable, meter_ids: Sequence[int]) -> list[asyncpg.Record]:
    """``meter_id, requested_at, read_at, active_set, items`` (JSON text), ``error`` of meters' checks."""
    return await rows(
        conn,
        "SELECT meter_id, requested_at, read_at, active_set, items::text AS items, error FROM tou_checks"
        " WHERE meter_id = ANY($1::int[])",
        list(meter_ids),
    )


async def due_checks(conn: Queryable, limit: int) -> list[asyncpg.Record]:
    """``meter_id, definition`` (JSON text) of the checks asked since their last read, oldest first."""
    return await rows(
        conn,
        "SELECT meter_id, definition::text AS definition FROM tou_checks"
        " WHERE read_at IS NULL OR read_at < requested_at ORDER BY requested_at LIMIT $1",
        limit,
    )


async def record_check(
    conn: asyncpg.Connection, meter_id: int, active_set: int | None, items: str | None, error: str | None
) -> None:
    """What the daemon read back from a meter (``items``: JSON text) or why it could not."""
    await conn.execute(
        "UPDATE tou_checks SET read_at = now(), active_set = $2, items = $3::jsonb, error = $4"
        " WHERE meter_id = $1",
        meter_id,
        active_set,
        items,
        error,
    )
