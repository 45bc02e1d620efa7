"""Read-only queries behind ``meters show``, ``channels show`` and ``accounts statement``: what an
operator asks about one meter, one channel or one account, without writing SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from headend.store.plans import custom_plans, plan_generically

Row = dict[str, object]


@dataclass(frozen=True, slots=True)
class Overview:
    """One entity's fields and its named lists of rows (latest readings, events, cycles, ...)."""

    fields: Row
    lists: dict[str, list[Row]] = field(default_factory=dict)

    def to_json(self) -> Row:
        """The fields with each list under its name."""
        return {**self.fields, **self.lists}


NO_CONTACT_KINDS = ("timeout", "quarantined", "quarantine_ended")  # the meter did not answer
"""Communication events the daemon stores that are no contact with the meter."""

_METER = """
SELECT m.id, m.name, m.protocol, m.address, m.unit_id, m.model, m.enabled, m.has_relay, m.protected,
       m.protected_reason, m.installed_at, m.removed_at, c.name AS channel,
       a.number AS account,
       $3::timestamptz AS last_read,
       greatest($4::timestamptz, (SELECT max(e.received_at) FROM events e
        WHERE e.meter_id = m.id AND e.kind NOT IN (SELECT unnest($2::text[])))) AS last_contact,
       (SELECT (e.details->>'drift_s')::float FROM events e
        WHERE e.meter_id = m.id AND e.kind LIKE 'clock%' ORDER BY e.occurred_at DESC LIMIT 1)
           AS clock_offset_s,
       (SELECT k.action FROM commands k WHERE k.meter_id = m.id AND k.state = 'confirmed' AND NOT k.dry_run
        AND k.action IN ('disconnect', 'reconnect') ORDER BY k.finished_at DESC LIMIT 1) AS last_relay_action,
       (SELECT count(*) FROM vee_holds h WHERE h.meter_id = m.id AND h.resolved_at IS NULL) AS open_holds,
       q.quarantined_until, q.quarantine_failures, q.quarantine_error
FROM meters m
LEFT JOIN LATERAL (
    SELECT (e.details->>'until')::timestamptz AS quarantined_until,
           (e.details->>'failures')::int AS quarantine_failures, e.details->>'error' AS quarantine_error
    FROM events e WHERE e.meter_id = m.id AND e.category = 'comm'
      AND e.kind IN ('quarantined', 'quarantine_ended')
    ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1) q ON q.quarantined_until > now()
JOIN channels c ON c.id = m.channel_id
LEFT JOIN meter_assignments ma ON ma.meter_id = m.id AND ma.effective_to IS NULL
LEFT JOIN accounts a ON a.id = ma.account_id
WHERE m.id = $1
"""

RECENT = timedelta(days=7)
"""The meter's readings are looked for in intervals this recent first (planned for that range, so only
its chunks or partitions are touched), and over the whole range only for what is not found there."""

EVER = datetime(1, 1, 1, tzinfo=UTC)
"""The lower bound that is the whole range of the readings."""

# the newest actual reading and the newest receipt of the meter's readings of intervals since $2, in
# one pass over them (the meter's key; a max(ts) of its own was planned as a walk down the time index
# of every meter's readings, which past thousands of meters costs several milliseconds)
_READ_AND_RECEIPT = """
SELECT max(ts) FILTER (WHERE quality = 'actual') AS last_read, max(received_at) AS last_received
FROM readings WHERE meter_id = $1 AND ts >= $2
"""

# per quantity ($3: those listed, or every one if NULL), the meter's newest reading since $2 (ts NULL:
# none)
_LATEST_READINGS = """
SELECT q.id, q.name AS quantity, r.ts, r.value, r.quality::text AS quality, q.unit
FROM quantities q LEFT JOIN LATERAL (
    SELECT ts, value, quality FROM readings
    WHERE meter_id = $1 AND quantity_id = q.id AND ts >= $2 ORDER BY ts DESC LIMIT 1) r ON true
WHERE $3::smallint[] IS NULL OR q.id = ANY($3::smallint[])
ORDER BY q.name
"""

_RECENT_EVENTS = """
SELECT occurred_at, category, kind, details::text AS details FROM events
WHERE meter_id = $1 ORDER BY occurred_at DESC LIMIT $2
"""

_RECENT_COMMANDS = """
SELECT id, action, state::text AS state, cause, operator, created_at, finished_at, last_error
FROM commands WHERE meter_id = $1 ORDER BY created_at DESC LIMIT $2
"""


async def meter_overview(conn: asyncpg.Connection, meter_id: int, recent: int = 5) -> Overview:
    """One meter: inventory, account, last read and contact, clock offset, relay, latest readings
    (per quantity), and its most recent events and commands (``meter_overview_in`` in a transaction
    of its own)."""
    async with custom_plans(conn):
        return await meter_overview_in(conn, meter_id, recent)


async def meter_overview_in(conn: asyncpg.Connection, meter_id: int, recent: int = 5) -> Overview:
    """``meter_overview`` inside the caller's read-only transaction planning for parameters (its reads
    then see one snapshot, and a page reading more runs one transaction), which it leaves planning
    generically.

    The readings are looked for in the last ``RECENT`` first, and over the whole range only when
    nothing is found there: the last read and the latest reading of each quantity are exact. Last
    contact is the newest receipt of the readings found that way (and of the events): a reading
    received after them for an interval older than ``RECENT`` (a re-collection of a range further
    back, an import) counts only when the meter has no reading in the last ``RECENT``."""
    since = datetime.now(UTC) - RECENT
    read = await conn.fetchrow(_READ_AND_RECEIPT, meter_id, since)
    latest = await conn.fetch(_LATEST_READINGS, meter_id, since, None)
    await plan_generically(conn)
    if read["last_read"] is None or read["last_received"] is None:
        read = await conn.fetchrow(_READ_AND_RECEIPT, meter_id, EVER)
    missing = [r["id"] for r in latest if r["ts"] is None]
    if missing:  # quantities without a recent reading (or none at all: the meter does not read them)
        older = {r["id"]: r for r in await conn.fetch(_LATEST_READINGS, meter_id, EVER, missing)}
        latest = [older.get(r["id"], r) for r in latest]  # in the database's order of the names
    row = await conn.fetchrow(
        _METER, meter_id, list(NO_CONTACT_KINDS), read["last_read"], read["last_received"]
    )
    return Overview(
        dict(row),
        {
            "latest": [{k: v for k, v in r.items() if k != "id"} for r in latest if r["ts"] is not None],
            "events": [dict(r) for r in await conn.fetch(_RECENT_EVENTS, meter_id, recent)],
            "commands": [dict(r) for r in await conn.fetch(_RECENT_COMMANDS, meter_id, recent)],
        },
    )


_CHANNEL = """
SELECT c.id, c.name, c.kind, c.address, c.settings->>'url' AS url, c.enabled,
       (SELECT count(*) FROM meters m WHERE m.channel_id = c.id AND m.removed_at IS NULL) AS meters,
       $2::timestamptz AS last_contact,
       (SELECT count(*) FROM events e WHERE e.channel_id = c.id AND e.category = 'comm'
        AND e.kind = 'timeout' AND e.occurred_at > now() - interval '24 hours') AS timeouts_24h
FROM channels c WHERE c.id = $1
"""

_CHANNEL_ID = "SELECT id FROM channels WHERE name = $1"

# the newest receipt of a reading, of an interval since $2, of a meter of the channel (removed ones too),
# meter by meter (each its own key's range: joined, the planner scanned the range of every meter)
_CHANNEL_CONTACT = """
SELECT max(x.received) FROM meters m CROSS JOIN LATERAL (
    SELECT max(r.received_at) AS received FROM readings r WHERE r.meter_id = m.id AND r.ts >= $2) x
WHERE m.channel_id = $1
"""

_CHANNEL_CYCLES = """
SELECT cycle_at, due, succeeded, readings, utilisation FROM read_cycles
WHERE channel_id = $1 AND finished_at IS NOT NULL ORDER BY cycle_at DESC LIMIT $2
"""

# the channel's installed meters ($3: those listed, or all if NULL) with their newest actual reading of
# an interval since $2: per quantity the station knows, the newest of the meter's key (an index probe
# each, stopping at the first actual one)
_CHANNEL_METERS = """
SELECT m.id, m.name, m.protocol, m.address, m.enabled,
       (SELECT max(x.ts) FROM quantities q CROSS JOIN LATERAL (
            SELECT r.ts FROM readings r
            WHERE r.meter_id = m.id AND r.quantity_id = q.id AND r.ts >= $2 AND r.quality = 'actual'
            ORDER BY r.ts DESC LIMIT 1) x) AS last_read
FROM meters m
WHERE m.channel_id = $1 AND m.removed_at IS NULL AND ($3::int[] IS NULL OR m.id = ANY($3::int[]))
ORDER BY m.name
"""

_CHANNEL_ERRORS = """
SELECT occurred_at, kind, details::text AS details FROM events
WHERE channel_id = $1 AND category = 'comm' ORDER BY occurred_at DESC LIMIT $2
"""


async def channel_overview(conn: asyncpg.Connection, name: str, recent: int = 10) -> Overview | None:
    """One channel: its settings, meters (with their last successful read), the last complete read
    cycles (success and utilisation) and its recent communication events; None if unknown.

    As ``meter_overview``, the readings are looked for in the last ``RECENT`` first, and over the
    whole range only for what is not found there: each meter's last read is exact. Last contact is the
    newest receipt of a reading of the channel's meters found that way: a reading received later for
    an interval older than ``RECENT`` counts only when the channel has no reading in the last
    ``RECENT``."""
    since = datetime.now(UTC) - RECENT
    async with custom_plans(conn):
        channel_id = await conn.fetchval(_CHANNEL_ID, name)
        if channel_id is None:
            return None
        contact = await conn.fetchval(_CHANNEL_CONTACT, channel_id, since)
        meters = await conn.fetch(_CHANNEL_METERS, channel_id, since, None)
        await plan_generically(conn)
        if contact is None:
            contact = await conn.fetchval(_CHANNEL_CONTACT, channel_id, EVER)
        missing = [m["id"] for m in meters if m["last_read"] is None]
        if missing:  # not read in the last RECENT (or never)
            older = {m["id"]: m for m in await conn.fetch(_CHANNEL_METERS, channel_id, EVER, missing)}
            meters = [older.get(m["id"], m) for m in meters]
        row = await conn.fetchrow(_CHANNEL, channel_id, contact)
        return Overview(
            dict(row),
            {
                "cycles": [dict(r) for r in await conn.fetch(_CHANNEL_CYCLES, channel_id, recent)],
                "meter_list": [{k: v for k, v in m.items() if k != "id"} for m in meters],
                "errors": [dict(r) for r in await conn.fetch(_CHANNEL_ERRORS, channel_id, recent)],
            },
        )


_ACCOUNT = "SELECT id, number, name, kind FROM accounts WHERE number = $1"

_OPENING = """
SELECT coalesce(sum(amount), 0) FROM ledger
WHERE account_id = $1 AND coalesce(period_end, created_at) < $2
"""

_ENTRIES = """
SELECT coalesce(period_end, created_at) AS at, kind, amount, idempotency_key AS reference,
       period_start, period_end, details->>'kwh' AS kwh
FROM ledger WHERE account_id = $1 AND coalesce(period_end, created_at) >= $2
  AND coalesce(period_end, created_at) < $3
ORDER BY coalesce(period_end, created_at), id
"""

_BILLS = """
SELECT id, period_start, period_end, consumption, amount, due_at, paid_at FROM bills
WHERE account_id = $1 AND period_end > $2 AND period_start < $3 ORDER BY period_start
"""


async def account_statement(
    conn: asyncpg.Connection, number: str, start: datetime, end: datetime
) -> Overview | None:
    """An account's ledger in ``[start, end)`` (charges at their period's end, payments and
    adjustments when recorded), the opening balance before it, and the bills of the period; None if
    the account is unknown."""
    account = await conn.fetchrow(_ACCOUNT, number)
    if account is None:
        return None
    return Overview(
        {**dict(account), "opening": await conn.fetchval(_OPENING, account["id"], start)},
        {
            "entries": [dict(r) for r in await conn.fetch(_ENTRIES, account["id"], start, end)],
            "bills": [dict(r) for r in await conn.fetch(_BILLS, account["id"], start, end)],
        },
    )
