"""Queries on exceptions: one rule's pass (open, count, mark clear, auto-close, in one set-based
statement), the listings, and the operators' compare-and-set transitions (the database checks who)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from headend.store.audit import set_actor
from headend.store.exception_rules import WINDOW_SUMMARY, WINDOW_SUMMARY_TABLE, RuleQuery
from headend.store.reading_hours import fold, hour_start
from headend.store.results import row, rows
from headend.vocabulary import ExceptionRule, ExceptionState

ACTIVE = "('open', 'acknowledged', 'dispatched')"

_PASS = """
WITH firing AS ({firing}),
seen AS (
    UPDATE exceptions e SET count = e.count + 1, last_seen = $1, evidence = f.evidence, clear_since = NULL
    FROM firing f
    WHERE e.rule = '{rule}' AND e.{column} = f.subject AND e.state IN {active}
    RETURNING e.{column} AS subject),
opened AS (
    INSERT INTO exceptions (rule, {column}, first_seen, last_seen, evidence)
    SELECT '{rule}', f.subject, $1, $1, f.evidence FROM firing f
    WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.subject = f.subject)
    ON CONFLICT DO NOTHING
    RETURNING id),
cleared AS (
    UPDATE exceptions e SET clear_since = $1
    WHERE e.rule = '{rule}' AND e.{column} IS NOT NULL AND e.state IN {active} AND e.clear_since IS NULL
      AND NOT EXISTS (SELECT 1 FROM firing f WHERE f.subject = e.{column})
    RETURNING e.id),
closed AS (
    UPDATE exceptions e SET state = 'auto_closed', closed_at = $1
    WHERE e.rule = '{rule}' AND e.{column} IS NOT NULL AND e.state IN {active} AND e.clear_since IS NOT NULL
      AND e.clear_since <= $1::timestamptz - make_interval(secs => $2)
      AND NOT EXISTS (SELECT 1 FROM firing f WHERE f.subject = e.{column})
    RETURNING e.id)
SELECT (SELECT count(*) FROM opened) AS opened, (SELECT count(*) FROM seen) AS seen,
       (SELECT count(*) FROM closed) AS closed
"""


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What one rule's pass did: exceptions opened, seen again (counted) and closed automatically."""

    opened: int
    seen: int
    closed: int


async def apply_rule(
    conn: asyncpg.Connection,
    query: RuleQuery,
    now: datetime,
    clear_after_s: float,
    params: tuple[object, ...],
) -> RuleOutcome:
    """Run one rule over what is stored at ``now`` and bring its exceptions up to date (in the caller's
    transaction; audited as ``system``)."""
    column = "meter_id" if query.subject == "meter" else "area_id"
    sql = _PASS.format(firing=query.firing, rule=query.rule, column=column, active=ACTIVE)
    await set_actor(conn, "system")
    found = await conn.fetchrow(sql, now, clear_after_s, *params)
    assert found is not None
    return RuleOutcome(found["opened"], found["seen"], found["closed"])


async def summarise_window(
    conn: asyncpg.Connection,
    now: datetime,
    window_s: float,
    spike_window_s: float,
    spike_history_s: float,
    tolerance_kwh: float,
) -> None:
    """Bring the hourly summary up to date (the hours the pass reaches back to), build the window
    summary the reading rules read from it (a temp table of this connection, replacing the previous
    pass's), then give the planner its statistics."""
    await fold(conn, hour_start(now - timedelta(seconds=max(window_s, spike_history_s))), now)
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{WINDOW_SUMMARY_TABLE}")
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '64MB'")  # its sorts and groups stay in memory
        await conn.execute(WINDOW_SUMMARY, now, window_s, spike_window_s, spike_history_s, tolerance_kwh)
    await conn.execute(f"ANALYZE pg_temp.{WINDOW_SUMMARY_TABLE}")


async def drop_window_summary(conn: asyncpg.Connection) -> None:
    """Drop the window summary (the connection goes back to a pool)."""
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{WINDOW_SUMMARY_TABLE}")


async def counts_by_rule_and_state(
    conn: asyncpg.Connection,
) -> dict[tuple[ExceptionRule, ExceptionState], int]:
    """How many exceptions each rule has in each state."""
    return {
        (r["rule"], r["state"]): r["n"]
        for r in await rows(conn, "SELECT rule, state, count(*) AS n FROM exceptions GROUP BY rule, state")
    }


_SELECT = """
SELECT x.id, x.rule, x.state, x.count, x.first_seen, x.last_seen, x.evidence::text AS evidence,
       x.clear_since, x.acknowledged_by, x.acknowledged_at, x.dispatched_to, x.dispatched_by, x.dispatched_at,
       x.resolved_by, x.note, x.closed_at,
       coalesce(m.name, m.address) AS meter, coalesce(a.name, ma.name) AS area
FROM exceptions x
LEFT JOIN meters m ON m.id = x.meter_id
LEFT JOIN areas a ON a.id = x.area_id
LEFT JOIN LATERAL (SELECT ar.name FROM area_members am JOIN areas ar ON ar.id = am.area_id
                   WHERE am.meter_id = x.meter_id AND am.valid_from <= current_date
                     AND (am.valid_to IS NULL OR am.valid_to > current_date)
                   UNION ALL SELECT ar.name FROM areas ar WHERE ar.supply_meter_id = x.meter_id
                   LIMIT 1) ma ON true
"""


async def list_exceptions(
    conn: asyncpg.Connection,
    *,
    rule: str | None,
    area: str | None,
    states: list[str],
    seen_before: datetime | None,
) -> list[asyncpg.Record]:
    """Exceptions matching every filter given (an area filter matches the area's own exceptions and
    those of its meters), oldest first."""
    return await rows(
        conn,
        f"""
        SELECT * FROM ({_SELECT}) e
        WHERE ($1::text IS NULL OR e.rule = $1) AND ($2::text IS NULL OR e.area = $2)
          AND (cardinality($3::text[]) = 0 OR e.state = ANY ($3::text[]))
          AND ($4::timestamptz IS NULL OR e.first_seen < $4)
        ORDER BY e.first_seen, e.id
        """,
        rule,
        area,
        states,
        seen_before,
    )


async def one_exception(conn: asyncpg.Connection, exception_id: int) -> asyncpg.Record | None:
    """One exception with its meter or area, or None."""
    return await row(conn, f"{_SELECT} WHERE x.id = $1", exception_id)


async def acknowledge(conn: asyncpg.Connection, exception_id: int, operator: str) -> bool:
    """open → acknowledged, if it is still open."""
    return await _moved(
        conn,
        "UPDATE exceptions SET state = 'acknowledged', acknowledged_by = $2, acknowledged_at = now()"
        " WHERE id = $1 AND state = 'open' RETURNING id",
        exception_id,
        operator,
    )


async def dispatch(conn: asyncpg.Connection, exception_id: int, operator: str, to: str) -> bool:
    """acknowledged → dispatched to ``to`` (a person or crew), if it is still acknowledged."""
    return await _moved(
        conn,
        "UPDATE exceptions SET state = 'dispatched', dispatched_to = $3, dispatched_by = $2,"
        " dispatched_at = now()"
        " WHERE id = $1 AND state = 'acknowledged' RETURNING id",
        exception_id,
        operator,
        to,
    )


async def resolve(conn: asyncpg.Connection, exception_id: int, operator: str, note: str) -> bool:
    """acknowledged or dispatched → resolved with ``note``, if it is still in one of those."""
    return await _moved(
        conn,
        "UPDATE exceptions SET state = 'resolved', resolved_by = $2, note = $3, closed_at = now()"
        " WHERE id = $1 AND state IN ('acknowledged', 'dispatched') RETURNING id",
        exception_id,
        operator,
        note,
    )


async def _moved(conn: asyncpg.Connection, sql: str, *args: object) -> bool:
    return await conn.fetchval(sql, *args) is not None
