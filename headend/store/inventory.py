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

# One statement per call (the admin check runs once per statement, migration 0087). $15 and $16: the
# rows state their name and their installation time (each replaces the stored one) or do not (a new
# meter gets the default name and now, an existing one keeps its own), which the update cannot tell
# from what the insert attempt filled in.
_UPSERT_METERS = """
INSERT INTO meters (name, protocol, address, unit_id, model, channel_id, protected,
                    protected_reason, has_relay, multiplier, enabled, installed_at, settings, meter_number)
SELECT x.name, x.protocol, x.address, x.unit_id, x.model, x.channel_id, x.protected, x.protected_reason,
       x.has_relay, x.multiplier, x.enabled, coalesce(x.installed_at, now()), x.settings::jsonb,
       x.meter_number
FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[], $6::int[], $7::bool[],
            $8::text[], $9::bool[], $10::numeric[], $11::bool[], $12::timestamptz[], $13::text[], $14::text[])
     AS x(name, protocol, address, unit_id, model, channel_id, protected, protected_reason, has_relay,
          multiplier, enabled, installed_at, settings, meter_number)
ON CONFLICT (channel_id, protocol, address, coalesce(unit_id, -1)) DO UPDATE SET
    name = CASE WHEN $15 THEN EXCLUDED.name ELSE meters.name END, model = EXCLUDED.model,
    settings = meters.settings - 'pn' - 'port' || EXCLUDED.settings,
    protected = EXCLUDED.protected, protected_reason = EXCLUDED.protected_reason,
    has_relay = EXCLUDED.has_relay, multiplier = EXCLUDED.multiplier, enabled = EXCLUDED.enabled,
    installed_at = CASE WHEN $16 THEN EXCLUDED.installed_at ELSE meters.installed_at END,
    removed_at = NULL, updated_at = now(),
    meter_number = coalesce(EXCLUDED.meter_number, meters.meter_number)
"""

# The assignments of the meters an import names with an account: the open one's account number and
# the latest one's (an ended history), by the meter's key in the file.
_NAMED_ASSIGNMENTS = """
SELECT k.ord, m.id AS meter_id, coalesce(m.name, m.address) AS label,
       (SELECT a.number FROM meter_assignments x JOIN accounts a ON a.id = x.account_id
        WHERE x.meter_id = m.id AND x.effective_to IS NULL) AS open_account,
       (SELECT a.number FROM meter_assignments x JOIN accounts a ON a.id = x.account_id
        WHERE x.meter_id = m.id ORDER BY x.effective_from DESC LIMIT 1) AS last_account
FROM unnest($1::int[], $2::text[], $3::text[], $4::int[]) WITH ORDINALITY AS k(channel_id, protocol, address,
                                                                              unit_id, ord)
JOIN meters m ON m.channel_id = k.channel_id AND m.protocol = k.protocol AND m.address = k.address
             AND coalesce(m.unit_id, -1) = coalesce(k.unit_id, -1)
ORDER BY k.ord
"""

# name, protocol, address, unit id, model, channel id, protected, protected reason,
# has relay, multiplier, enabled, installed at (None: now / unchanged), settings (the concentrator
# point: pn and port; replaces the stored ones, other settings are kept), meter number (None: unchanged)
MeterRow = tuple[
    str | None,
    str,
    str,
    int | None,
    str,
    int,
    bool,
    str | None,
    bool,
    float,
    bool,
    datetime | None,
    dict[str, int],
    str | None,
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
    """Insert or update meters by (channel, protocol, address, unit); a removed meter comes back. The
    rows name each meter once (one statement cannot update a row twice)."""
    batches: dict[tuple[bool, bool], list[tuple[object, ...]]] = {}
    for row in rows:
        stated = (row[0] is not None, row[11] is not None)
        batches.setdefault(stated, []).append((*row[:12], json.dumps(row[12]), row[13]))
    for (name_stated, installed_stated), batch in batches.items():
        columns = [list(column) for column in zip(*batch, strict=True)]
        await conn.execute(_UPSERT_METERS, *columns, name_stated, installed_stated)


# channel id, protocol, address, unit id: how an import names a stored meter
MeterKey = tuple[int, str, str, int | None]


async def named_assignments(conn: asyncpg.Connection, keys: Sequence[MeterKey]) -> list[asyncpg.Record]:
    """For each stored meter of ``keys`` (in order): ``ord`` (1-based position in ``keys``),
    ``meter_id``, ``label``, ``open_account`` and ``last_account`` (account numbers, or None)."""
    return await rows(
        conn,
        _NAMED_ASSIGNMENTS,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
    )


async def open_first_assignment(conn: asyncpg.Connection, meter_id: int, account_id: int) -> None:
    """The first assignment of a meter named with an account by an import: over all time (as such a
    meter always billed), under the signed-in operator (the schema owner: ``system``)."""
    await conn.execute(
        """INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)
           VALUES ($1, $2, '0001-01-01 00:00:00+00', coalesce(headend_current_operator(), 'system'))""",
        meter_id,
        account_id,
    )


async def list_inventory(conn: asyncpg.Connection, channel: str | None = None) -> list[asyncpg.Record]:
    """Meters with their channel, in channel then address order (optionally one channel only)."""
    return await rows(
        conn,
        """
        SELECT c.name AS channel, c.settings->>'url' AS url, c.enabled AS channel_enabled, m.id, m.name,
               m.protocol, m.address, m.unit_id, m.model, m.protected, m.has_relay, m.enabled,
               m.meter_number
        FROM meters m JOIN channels c ON c.id = m.channel_id
        WHERE m.removed_at IS NULL AND ($1::text IS NULL OR c.name = $1)
        ORDER BY c.name, m.protocol, m.address
        """,
        channel,
    )


async def installed_names(conn: asyncpg.Connection) -> dict[str, tuple[str, str, str]]:
    """``(channel, protocol, address)`` of every installed meter by name."""
    rows = await conn.fetch(
        "SELECT m.name, c.name AS channel, m.protocol, m.address FROM meters m"
        " JOIN channels c ON c.id = m.channel_id WHERE m.removed_at IS NULL"
    )
    return {r["name"]: (r["channel"], r["protocol"], r["address"]) for r in rows}


async def meters_named(conn: asyncpg.Connection, ref: str) -> list[asyncpg.Record]:
    """``id``, ``label`` (the name), ``exact`` (named ``ref``) and ``installed`` of the meters named
    ``ref`` or addressed ``ref`` or ``channel/ref``; exact names first, installed meters first."""
    return await rows(
        conn,
        # the first condition only lets the indexes on name and address find the candidates (the
        # address of a channel/address is the text after one of its slashes), the second decides
        """SELECT m.id, m.name AS label, m.name = $1 AS exact, m.removed_at IS NULL AS installed
           FROM meters m JOIN channels c ON c.id = m.channel_id
           WHERE (m.name = $1 OR m.address = $1 OR m.address = ANY (ARRAY(SELECT substr($1, i + 1)
                    FROM generate_series(1, length($1)) i WHERE substr($1, i, 1) = '/')))
             AND (m.name = $1 OR m.address = $1 OR c.name || '/' || m.address = $1)
           ORDER BY m.name = $1 DESC, m.removed_at IS NULL DESC, m.id""",
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
    ``identity``: the DL/T 645 meter number recorded for it, if any: the inventory's ``meter_number``,
    else the one the billing pass learned on first use)."""
    return await rows(
        conn,
        "SELECT m.id, m.channel_id, m.protocol, m.address, m.unit_id, m.model, m.installed_at, m.name,"
        " (m.settings->>'pn')::int AS pn, (m.settings->>'port')::int AS port,"
        " coalesce(m.meter_number, i.identity) AS identity"
        " FROM meters m LEFT JOIN meter_identities i ON i.meter_id = m.id"
        " WHERE m.enabled AND m.removed_at IS NULL ORDER BY m.channel_id, m.id",
    )


async def recorded_numbers(conn: asyncpg.Connection, ref: str) -> list[tuple[str, str | None]]:
    """``(label, meter number)`` of the installed DL/T 645-2007 meters named or addressed ``ref`` (or
    ``channel/ref``): the inventory's stated ``meter_number``, else the one learned on first use."""
    found = await rows(
        conn,
        """SELECT coalesce(m.name, c.name || '/' || m.address) AS label,
                  coalesce(m.meter_number, i.identity) AS number
           FROM meters m JOIN channels c ON c.id = m.channel_id
           LEFT JOIN meter_identities i ON i.meter_id = m.id
           WHERE m.removed_at IS NULL AND m.protocol = 'dlt645-2007'
             AND (m.name = $1 OR m.address = $1 OR c.name || '/' || m.address = $1
                  OR ($1 ~ '^[0-9]{1,12}$' AND m.address = lpad($1, 12, '0')))
           ORDER BY m.name = $1 DESC, m.id""",
        ref,
    )
    return [(str(r["label"]), r["number"]) for r in found]
