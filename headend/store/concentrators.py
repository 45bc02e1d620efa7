"""Queries on Q/GDW 1376.1 concentrators: their meters' points (Pn, port) and their own event records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_INSERT_TERMINAL_EVENT = """
INSERT INTO events (category, kind, channel_id, occurred_at, ended_at, details)
VALUES ('terminal', $1, $2, $3, $4, $5::jsonb)
ON CONFLICT (channel_id, kind, occurred_at) WHERE category = 'terminal' DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class TerminalEventRow:
    """One concentrator event record to store (times UTC; ``occurred_at`` required)."""

    kind: str
    occurred_at: datetime
    ended_at: datetime | None
    details: dict[str, object]


@dataclass(frozen=True, slots=True)
class MeterPoint:
    """A meter of a concentrator channel as the inventory has it."""

    meter_id: int
    address: str
    protocol: str
    pn: int
    port: int


async def insert_terminal_events(
    conn: asyncpg.Connection, channel_id: int, rows: Sequence[TerminalEventRow]
) -> int:
    """Store a concentrator's event records once each; returns how many were new."""
    inserted = 0
    async with conn.transaction():
        for row in rows:
            status = await conn.execute(
                _INSERT_TERMINAL_EVENT,
                row.kind,
                channel_id,
                row.occurred_at,
                row.ended_at,
                json.dumps(row.details, default=str),
            )
            inserted += int(status.rsplit(" ", 1)[-1])
    return inserted


async def channel_of(conn: asyncpg.Connection, name: str) -> tuple[int, str] | None:
    """``(id, url)`` of the channel named ``name`` (None if there is none)."""
    row = await conn.fetchrow("SELECT id, settings->>'url' AS url FROM channels WHERE name = $1", name)
    return None if row is None else (int(row["id"]), str(row["url"] or ""))


async def channel_points(conn: asyncpg.Connection, channel_id: int) -> list[MeterPoint]:
    """The enabled, installed meters of a concentrator channel with their Pn and port."""
    rows = await conn.fetch(
        "SELECT id, address, protocol, (settings->>'pn')::int AS pn, (settings->>'port')::int AS port"
        " FROM meters WHERE channel_id = $1 AND enabled AND removed_at IS NULL AND settings ? 'pn'"
        " ORDER BY (settings->>'pn')::int",
        channel_id,
    )
    return [MeterPoint(r["id"], r["address"], r["protocol"], r["pn"], r["port"]) for r in rows]


async def channel_kinds(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, str]:
    """The kind of each channel named in ``names`` that exists."""
    rows = await conn.fetch("SELECT name, kind FROM channels WHERE name = ANY($1::text[])", list(set(names)))
    return {r["name"]: r["kind"] for r in rows}


async def stored_pns(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """The Pn of every meter that has one, by (channel name, meter address): kept across imports."""
    rows = await conn.fetch(
        "SELECT c.name, m.address, (m.settings->>'pn')::int AS pn FROM meters m"
        " JOIN channels c ON c.id = m.channel_id WHERE m.settings ? 'pn' AND m.removed_at IS NULL"
    )
    return {(r["name"], r["address"]): r["pn"] for r in rows}


async def duplicate_pns(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    """(channel name, Pn) given to more than one installed meter."""
    rows = await conn.fetch(
        "SELECT c.name, (m.settings->>'pn')::int AS pn FROM meters m JOIN channels c ON c.id = m.channel_id"
        " WHERE m.settings ? 'pn' AND m.removed_at IS NULL GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2"
    )
    return [(r["name"], r["pn"]) for r in rows]
