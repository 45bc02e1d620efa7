"""SQL of validation (VEE): unvalidated energy readings, validation state, suspect marks, holds, restarts."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from headend.store.results import row, rows

ENERGY_REGISTERS = ["energy_import_kwh", *(f"energy_import_t{n}_kwh" for n in range(1, 5))]


async def lock_validation(conn: asyncpg.Connection) -> None:
    """Serialise validation passes (the daemon's service, ``headend billing bill``) until the end of
    the current transaction: each pass sees what the previous one validated."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('headend.vee'))")


async def meters_to_validate(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per meter and energy register: the meter's limits and its validation state (NULL when new)."""
    return await rows(
        conn,
        """SELECT m.id AS meter_id, m.protocol, m.settings, m.multiplier, q.id AS quantity_id,
                  s.validated_until, s.last_ts, s.last_value,
                  EXISTS (SELECT 1 FROM vee_holds h WHERE h.meter_id = m.id AND h.quantity_id = q.id
                          AND h.resolved_at IS NULL) AS held
           FROM meters m CROSS JOIN quantities q
           LEFT JOIN vee_state s ON s.meter_id = m.id AND s.quantity_id = q.id
           WHERE q.name = ANY($1::text[])""",
        ENERGY_REGISTERS,
    )


async def new_readings(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Energy readings stored after each register's validation watermark, in time order per register."""
    return await rows(
        conn,
        """SELECT r.meter_id, r.quantity_id, r.ts, r.value
           FROM readings r JOIN quantities q ON q.id = r.quantity_id
           LEFT JOIN vee_state s ON s.meter_id = r.meter_id AND s.quantity_id = r.quantity_id
           WHERE q.name = ANY($1::text[]) AND r.value IS NOT NULL
             AND r.quality IN ('actual', 'backfilled', 'freeze', 'estimated')
             AND r.ts > coalesce(s.validated_until, '-infinity')
           ORDER BY r.meter_id, r.quantity_id, r.ts""",
        ENERGY_REGISTERS,
    )


async def mark_suspect(conn: asyncpg.Connection, keys: list[tuple[int, int, datetime]]) -> None:
    """Give the readings (meter, quantity, ts) the ``suspect`` quality (one statement for the batch)."""
    await conn.execute(
        """UPDATE readings r SET quality = 'suspect'
           FROM unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS k(meter_id, quantity_id, ts)
           WHERE r.meter_id = k.meter_id AND r.quantity_id = k.quantity_id AND r.ts = k.ts""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )


async def save_states(
    conn: asyncpg.Connection, rows: list[tuple[int, int, datetime, datetime, float]]
) -> None:
    """Move the watermarks and last valid values: rows of (meter, quantity, validated until, last ts,
    last value), one statement for the batch."""
    await conn.execute(
        """INSERT INTO vee_state (meter_id, quantity_id, validated_until, last_ts, last_value)
           SELECT * FROM unnest($1::int[], $2::smallint[], $3::timestamptz[], $4::timestamptz[],
                                $5::float8[])
           ON CONFLICT (meter_id, quantity_id) DO UPDATE SET validated_until = EXCLUDED.validated_until,
               last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value""",
        *([row[i] for row in rows] for i in range(5)),
    )


async def open_hold(
    conn: asyncpg.Connection,
    meter_id: int,
    quantity_id: int,
    rule: str,
    reason: str,
    first_ts: datetime,
    previous_value: float | None,
    value: float | None,
) -> int | None:
    """Open a hold on a register (none if one is open already); returns its id, or None."""
    found: int | None = await conn.fetchval(
        """INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts, previous_value, value)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (meter_id, quantity_id) WHERE resolved_at IS NULL
           DO NOTHING RETURNING id""",
        meter_id,
        quantity_id,
        rule,
        reason,
        first_ts,
        previous_value,
        value,
    )
    return found


async def open_holds(conn: asyncpg.Connection, meter: int | None = None) -> list[asyncpg.Record]:
    """Unresolved holds (of one meter, or all), with the meter label, register and account."""
    return await rows(
        conn,
        """SELECT h.id, h.meter_id, coalesce(m.name, m.address) AS meter, q.name AS quantity, h.rule,
                  h.reason, h.first_ts, h.previous_value, h.value, h.opened_at, a.number AS account
           FROM vee_holds h JOIN meters m ON m.id = h.meter_id JOIN quantities q ON q.id = h.quantity_id
           LEFT JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL
           LEFT JOIN accounts a ON a.id = x.account_id
           WHERE h.resolved_at IS NULL AND ($1::int IS NULL OR h.meter_id = $1) ORDER BY h.id""",
        meter,
    )


async def held_meters(conn: asyncpg.Connection, meter_ids: list[int]) -> dict[int, str]:
    """Of ``meter_ids``, those with an unresolved hold, with the reason of the oldest one."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (meter_id) meter_id, quantity_id, reason FROM vee_holds
           WHERE resolved_at IS NULL AND meter_id = ANY($1::int[]) ORDER BY meter_id, id""",
        meter_ids,
    )
    return {r["meter_id"]: r["reason"] for r in rows}


async def close_hold(
    conn: asyncpg.Connection, hold_id: int, resolution: str, operator: str, reason: str
) -> None:
    """Mark a hold resolved by ``operator``."""
    await conn.execute(
        """UPDATE vee_holds SET resolved_at = now(), resolution = $2, resolved_by = $3,
                  resolution_reason = $4 WHERE id = $1""",
        hold_id,
        resolution,
        operator,
        reason,
    )


async def release_suspects(conn: asyncpg.Connection, meter_id: int, quantity_id: int, since: datetime) -> int:
    """Suspect readings of a register from ``since`` back to ``actual`` and the watermark back to before
    them (they are validated again against the new baseline); returns how many."""
    count = await conn.fetchval(
        """WITH done AS (UPDATE readings SET quality = 'actual' WHERE meter_id = $1 AND quantity_id = $2
                         AND ts >= $3 AND quality = 'suspect' RETURNING 1) SELECT count(*) FROM done""",
        meter_id,
        quantity_id,
        since,
    )
    return int(count)


async def set_baseline(
    conn: asyncpg.Connection, meter_id: int, quantity_id: int, at: datetime, value: float
) -> None:
    """Restart validation of a register at ``at`` with ``value`` as the last valid reading."""
    await conn.execute(
        """INSERT INTO vee_state (meter_id, quantity_id, validated_until, last_ts, last_value)
           VALUES ($1, $2, $3, $3, $4) ON CONFLICT (meter_id, quantity_id) DO UPDATE
           SET validated_until = $3, last_ts = $3, last_value = $4""",
        meter_id,
        quantity_id,
        at,
        value,
    )


async def reading_at(conn: asyncpg.Connection, meter_id: int, quantity_id: int, ts: datetime) -> float | None:
    """The stored value of one reading."""
    found: float | None = await conn.fetchval(
        "SELECT value FROM readings WHERE meter_id = $1 AND quantity_id = $2 AND ts = $3",
        meter_id,
        quantity_id,
        ts,
    )
    return found


async def add_restart(
    conn: asyncpg.Connection,
    meter_id: int,
    quantity_id: int,
    at: datetime,
    final_value: float,
    initial_value: float,
    hold_id: int,
    operator: str,
) -> None:
    """Record a register restarted in place (a meter swapped under the same inventory row)."""
    await conn.execute(
        """INSERT INTO register_restarts (meter_id, quantity_id, at, final_value, initial_value, hold_id,
                                          operator) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        meter_id,
        quantity_id,
        at,
        final_value,
        initial_value,
        hold_id,
        operator,
    )


async def restarts_between(
    conn: asyncpg.Connection, meter_id: int, quantity: str, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Register restarts of one meter's register with ``start < at <= end``, in time order."""
    return await rows(
        conn,
        """SELECT r.at, r.final_value, r.initial_value FROM register_restarts r
           JOIN quantities q ON q.id = r.quantity_id
           WHERE r.meter_id = $1 AND q.name = $2 AND r.at > $3 AND r.at <= $4 ORDER BY r.at""",
        meter_id,
        quantity,
        start,
        end,
    )


async def hold_by_id(conn: asyncpg.Connection, hold_id: int) -> asyncpg.Record | None:
    """One hold."""
    return await row(conn, "SELECT * FROM vee_holds WHERE id = $1", hold_id)


async def add_note(conn: asyncpg.Connection, hold_id: int, operator: str, note: str) -> None:
    """A note by ``operator`` on an open hold, which stays open."""
    await conn.execute(
        "INSERT INTO vee_hold_notes (hold_id, operator, note) VALUES ($1, $2, $3)", hold_id, operator, note
    )


async def count_open_holds(conn: asyncpg.Connection) -> int:
    """How many registers are held."""
    return int(await conn.fetchval("SELECT count(*) FROM vee_holds WHERE resolved_at IS NULL"))


async def correct_reading(
    conn: asyncpg.Connection, meter_id: int, quantity_id: int, ts: datetime, value: float
) -> None:
    """Replace a reading's value by an operator's estimate (quality ``estimated``)."""
    await conn.execute(
        """UPDATE readings SET value = $4, quality = 'estimated'
           WHERE meter_id = $1 AND quantity_id = $2 AND ts = $3""",
        meter_id,
        quantity_id,
        ts,
        value,
    )


async def rewind(conn: asyncpg.Connection, meter_id: int, quantity_id: int) -> None:
    """Validate a register again from its last valid reading on."""
    await conn.execute(
        "UPDATE vee_state SET validated_until = last_ts WHERE meter_id = $1 AND quantity_id = $2",
        meter_id,
        quantity_id,
    )


async def resolve_meter_holds(conn: asyncpg.Connection, meter_id: int, operator: str, reason: str) -> int:
    """Resolve every open hold of a meter taken out (its replacement is recorded); returns how many."""
    done = await conn.execute(
        """UPDATE vee_holds SET resolved_at = now(), resolution = 'replaced', resolved_by = $2,
                  resolution_reason = $3 WHERE meter_id = $1 AND resolved_at IS NULL""",
        meter_id,
        operator,
        reason,
    )
    return int(done.split()[-1])


async def identities_due(conn: asyncpg.Connection, before: datetime) -> list[asyncpg.Record]:
    """DL/T 645-2007 meters on an account whose identity was not checked since ``before``: ``id``,
    ``identity`` (the inventory's stated ``meter_number``, else the recorded one, else None) and
    ``stated`` (whether the inventory states it)."""
    return await rows(
        conn,
        """SELECT m.id, coalesce(m.meter_number, i.identity) AS identity, m.meter_number IS NOT NULL AS stated
           FROM meters m LEFT JOIN meter_identities i ON i.meter_id = m.id
           WHERE m.enabled AND m.protocol = 'dlt645-2007'
             AND EXISTS (SELECT 1 FROM meter_assignments x WHERE x.meter_id = m.id AND x.effective_to IS NULL)
             AND (i.checked_at IS NULL OR i.checked_at < $1) ORDER BY m.id""",
        before,
    )


async def current_identity(conn: asyncpg.Connection, meter_id: int) -> str | None:
    """The meter's recorded identity (the inventory's stated number, else the learned one), its
    ``meter_identities`` row locked until the end of the transaction (resolving a hold updates it)."""
    learned = await conn.fetchval(
        "SELECT identity FROM meter_identities WHERE meter_id = $1 FOR UPDATE", meter_id
    )
    stated = await conn.fetchval("SELECT meter_number FROM meters WHERE id = $1", meter_id)
    found = stated if stated is not None else learned
    return None if found is None else str(found)


async def save_identity(
    conn: asyncpg.Connection, meter_id: int, identity: str, observed: str | None, at: datetime
) -> None:
    """Record the meter's identity (first check) or the check time and a different ``observed`` one."""
    await conn.execute(
        """INSERT INTO meter_identities (meter_id, identity, observed, checked_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (meter_id) DO UPDATE SET observed = $3, checked_at = $4,
               identity = CASE WHEN $3 IS NULL THEN $2 ELSE meter_identities.identity END""",
        meter_id,
        identity,
        observed,
        at,
    )


async def adopt_identity(conn: asyncpg.Connection, meter_id: int) -> None:
    """After an operator resolved an identity hold as a replacement: the observed identity is the
    meter's, also as the inventory's stated ``meter_number`` where it states one (the resolving admin
    records it)."""
    await conn.execute(
        """UPDATE meters m SET meter_number = i.observed, updated_at = now() FROM meter_identities i
           WHERE m.id = $1 AND i.meter_id = m.id AND m.meter_number IS NOT NULL AND i.observed IS NOT NULL""",
        meter_id,
    )
    await conn.execute(
        """UPDATE meter_identities SET identity = coalesce(observed, identity), observed = NULL
           WHERE meter_id = $1""",
        meter_id,
    )


async def energy_register(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """The total energy register's id and validation state of a meter (the state may be NULL)."""
    return await row(
        conn,
        """SELECT q.id AS quantity_id, s.last_ts, s.last_value FROM quantities q
           LEFT JOIN vee_state s ON s.meter_id = $1 AND s.quantity_id = q.id
           WHERE q.name = 'energy_import_kwh'""",
        meter_id,
    )


async def first_suspect_after(
    conn: asyncpg.Connection, meter_id: int, quantity_id: int, after: datetime
) -> datetime | None:
    """The first suspect reading of a register after ``after``."""
    found: datetime | None = await conn.fetchval(
        """SELECT min(ts) FROM readings WHERE meter_id = $1 AND quantity_id = $2 AND ts > $3
           AND quality = 'suspect'""",
        meter_id,
        quantity_id,
        after,
    )
    return found
