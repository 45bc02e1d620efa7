"""Queries on the inventory: channels and meters (import upserts, listings, the engine's snapshot)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from headend.store.results import rows

_UPSERT_CHANNEL = """
INSERT INTO channels (name, kind, address, settings, enabled) VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, address = EXCLUDED.address,
    settings = EXCLUDED.settings, enabled = EXCLUDED.enabled, updated_at = now()
RETURNING id
"""

_UPSERT_METER = """
INSERT INTO meters (name, protocol, address, unit_id, model, channel_id, account_id, protected,
                    protected_reason, has_relay, multiplier, enabled, installed_at, settings)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $14::jsonb)
ON CONFLICT (channel_id, protocol, address, coalesce(unit_id, -1)) DO UPDATE SET
    name = EXCLUDED.name, model = EXCLUDED.model, account_id = EXCLUDED.account_id,
    settings = meters.settings - 'pn' - 'port' || EXCLUDED.settings,
    protected = EXCLUDED.protected, protected_reason = EXCLUDED.protected_reason,
    has_relay = EXCLUDED.has_relay, multiplier = EXCLUDED.multiplier, enabled = EXCLUDED.enabled,
    installed_at = coalesce($13, meters.installed_at), removed_at = NULL, updated_at = now()
"""

# name, protocol, address, unit id, model, channel id, account id, protected, protected reason,
# has relay, multiplier, enabled, installed at (None: now / unchanged), settings (the concentrator
# point: pn and port; replaces the stored ones, other settings are kept)
MeterRow = tuple[
    str | None,
    str,
    str,
    int | None,
    str,
    int,
    int | None,
    bool,
    str | None,
    bool,
    float,
    bool,
    datetime | None,
    dict[str, int],
]


async def channel_ids(conn: asyncpg.Connection) -> dict[str, int]:
    """Every channel's id by name."""
    return {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM channels")}


async def account_ids(conn: asyncpg.Connection) -> dict[str, int]:
    """Every account's id by number."""
    return {r["number"]: r["id"] for r in await conn.fetch("SELECT id, number FROM accounts")}


async def upsert_channel(
    conn: asyncpg.Connection, name: str, kind: str, address: str, settings: dict[str, object], enabled: bool
) -> int:
    """Insert or update a channel by name; returns its id."""
    channel_id: int = await conn.fetchval(_UPSERT_CHANNEL, name, kind, address, json.dumps(settings), enabled)
    return channel_id


async def upsert_meters(conn: asyncpg.Connection, rows: Sequence[MeterRow]) -> None:
    """Insert or update meters by (channel, protocol, address, unit); a removed meter comes back."""
    await conn.executemany(_UPSERT_METER, [(*row[:13], json.dumps(row[13])) for row in rows])


async def list_inventory(conn: asyncpg.Connection, channel: str | None = None) -> list[asyncpg.Record]:
    """Meters with their channel, in channel then address order (optionally one channel only)."""
    return await rows(
        conn,
        """
        SELECT c.name AS channel, c.settings->>'url' AS url, c.enabled AS channel_enabled, m.id, m.name,
               m.protocol, m.address, m.unit_id, m.model, m.protected, m.has_relay, m.enabled
        FROM meters m JOIN channels c ON c.id = m.channel_id
        WHERE m.removed_at IS NULL AND ($1::text IS NULL OR c.name = $1)
        ORDER BY c.name, m.protocol, m.address
        """,
        channel,
    )


async def meters_named(conn: asyncpg.Connection, ref: str) -> list[asyncpg.Record]:
    """``id`` and ``label`` of the meters named or addressed ``ref``."""
    return await rows(
        conn,
        "SELECT id, coalesce(name, address) AS label FROM meters WHERE name = $1 OR address = $1 ORDER BY id",
        ref,
    )


async def inventory_version(conn: asyncpg.Connection) -> tuple[object, ...]:
    """A cheap token that changes whenever channels or meters are added, changed or removed."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM channels), (SELECT max(updated_at) FROM channels),"
        " (SELECT count(*) FROM meters), (SELECT max(updated_at) FROM meters)"
    )
    return tuple(row) if row is not None else ()


async def enabled_channels(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """``id, name, kind, address, settings`` (a dict) of the enabled channels."""
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
    return await rows(conn, "SELECT id, name, kind, address, settings FROM channels WHERE enabled")


async def enabled_meters(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The enabled, installed meters, by channel then id (``pn``/``port``: behind a concentrator;
    ``identity``: the DL/T 645 meter number recorded for it, if any)."""
    return await rows(
        conn,
        "SELECT m.id, m.channel_id, m.protocol, m.address, m.unit_id, m.model, m.installed_at, m.name,"
        " (m.settings->>'pn')::int AS pn, (m.settings->>'port')::int AS port, i.identity"
        " FROM meters m LEFT JOIN meter_identities i ON i.meter_id = m.id"
        " WHERE m.enabled AND m.removed_at IS NULL ORDER BY m.channel_id, m.id",
    )
