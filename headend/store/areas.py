"""Queries on transformer areas: areas (supply meter, CT / PT ratios, loss limit) and the dated
memberships of their customer meters."""

from __future__ import annotations

from datetime import date

import asyncpg

from headend.store.results import rows

_UPSERT_AREA = """
INSERT INTO areas (name, supply_meter_id, ct_ratio, pt_ratio, loss_limit_pct) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET supply_meter_id = EXCLUDED.supply_meter_id, ct_ratio = EXCLUDED.ct_ratio,
    pt_ratio = EXCLUDED.pt_ratio, loss_limit_pct = EXCLUDED.loss_limit_pct, updated_at = now()
RETURNING id
"""


async def upsert_area(
    conn: asyncpg.Connection, name: str, supply_meter_id: int, ct: float, pt: float, limit_pct: float
) -> int:
    """Insert or update an area by name; returns its id."""
    area_id: int = await conn.fetchval(_UPSERT_AREA, name, supply_meter_id, ct, pt, limit_pct)
    return area_id


async def open_memberships(conn: asyncpg.Connection, meter_ids: list[int]) -> dict[int, asyncpg.Record]:
    """The open (current) membership of each of ``meter_ids`` that has one: ``area_id, valid_from``."""
    found = await rows(
        conn,
        "SELECT meter_id, area_id, valid_from FROM area_members"
        " WHERE meter_id = ANY($1::int[]) AND valid_to IS NULL FOR UPDATE",
        meter_ids,
    )
    return {r["meter_id"]: r for r in found}


async def open_members_of(conn: asyncpg.Connection, area_id: int) -> dict[int, date]:
    """``meter_id -> valid_from`` of the open memberships of one area."""
    found = await rows(
        conn,
        "SELECT meter_id, valid_from FROM area_members WHERE area_id = $1 AND valid_to IS NULL FOR UPDATE",
        area_id,
    )
    return {r["meter_id"]: r["valid_from"] for r in found}


async def close_membership(conn: asyncpg.Connection, meter_id: int, valid_from: date, until: date) -> None:
    """End a meter's membership that started on ``valid_from`` at ``until`` (exclusive)."""
    await conn.execute(
        "UPDATE area_members SET valid_to = $3 WHERE meter_id = $1 AND valid_from = $2",
        meter_id,
        valid_from,
        until,
    )


async def drop_membership(conn: asyncpg.Connection, meter_id: int, valid_from: date) -> None:
    """Remove a membership that would end the day it starts (left on the day it joined)."""
    await conn.execute(
        "DELETE FROM area_members WHERE meter_id = $1 AND valid_from = $2", meter_id, valid_from
    )


async def move_membership(conn: asyncpg.Connection, meter_id: int, valid_from: date, area_id: int) -> None:
    """Correct the area of a membership that starts on ``valid_from`` (same day: no history to keep)."""
    await conn.execute(
        "UPDATE area_members SET area_id = $3 WHERE meter_id = $1 AND valid_from = $2",
        meter_id,
        valid_from,
        area_id,
    )


async def add_memberships(conn: asyncpg.Connection, area_id: int, meter_ids: list[int], since: date) -> None:
    """Open memberships of ``meter_ids`` in the area from ``since``, in one statement (the admin check
    runs once per statement, migration 0077)."""
    await conn.execute(
        "INSERT INTO area_members (meter_id, area_id, valid_from) SELECT unnest($1::integer[]), $2, $3",
        meter_ids,
        area_id,
        since,
    )


async def installed_ids_by_name(conn: asyncpg.Connection, names: list[str]) -> dict[str, int]:
    """``name -> id`` of the installed meters among ``names`` (names are unique among them)."""
    found = await rows(
        conn, "SELECT name, id FROM meters WHERE name = ANY($1::text[]) AND removed_at IS NULL", names
    )
    return {r["name"]: r["id"] for r in found}


async def list_areas(conn: asyncpg.Connection, name: str | None = None) -> list[asyncpg.Record]:
    """Areas with their supply meter's label, by name (optionally one area)."""
    return await rows(
        conn,
        "SELECT a.id, a.name, coalesce(m.name, m.address) AS supply_meter, a.ct_ratio, a.pt_ratio,"
        " a.loss_limit_pct FROM areas a JOIN meters m ON m.id = a.supply_meter_id"
        " WHERE $1::text IS NULL OR a.name = $1 ORDER BY a.name",
        name,
    )


async def members_on(conn: asyncpg.Connection, day: date) -> list[asyncpg.Record]:
    """``area, meter, valid_from`` of every membership in force on ``day``, by area then meter."""
    return await rows(
        conn,
        "SELECT a.name AS area, coalesce(m.name, m.address) AS meter, am.valid_from"
        " FROM area_members am JOIN areas a ON a.id = am.area_id JOIN meters m ON m.id = am.meter_id"
        " WHERE am.valid_from <= $1 AND (am.valid_to IS NULL OR am.valid_to > $1)"
        " ORDER BY a.name, m.name NULLS LAST, m.address",
        day,
    )


async def check_memberships(conn: asyncpg.Connection) -> None:
    """Run the deferred no-overlap check now (raises ExclusionViolationError / CheckViolationError)."""
    await conn.execute("SET CONSTRAINTS area_members_no_overlap IMMEDIATE")


async def area_supplied_by(conn: asyncpg.Connection, meter_id: int) -> str | None:
    """The name of the area whose supply meter ``meter_id`` is, if any."""
    name: str | None = await conn.fetchval("SELECT name FROM areas WHERE supply_meter_id = $1", meter_id)
    return name
