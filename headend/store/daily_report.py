"""The daily report's sections, each one SQL statement over what the daemon stored for one local day
(``lo`` … ``hi``: its two midnights in UTC). "The day's freeze" is the energy register at ``hi``, the
midnight that closes the day (a daily freeze, or an actual / backfilled reading at that instant)."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from headend.store.results import rows

# A meter counts for the day when it is enabled and was in service at the day's end.
_IN_SERVICE = "m.enabled AND m.installed_at < $2 AND (m.removed_at IS NULL OR m.removed_at >= $2)"
_FROZEN = """EXISTS (SELECT 1 FROM readings f WHERE f.meter_id = m.id AND f.ts = $2
                 AND f.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
                 AND f.quality IN ('freeze', 'actual', 'backfilled'))"""

_CHANNELS = f"""
SELECT c.name AS channel, c.kind, coalesce(mm.meters, 0) AS meters, coalesce(mm.frozen, 0) AS frozen,
       round(100.0 * mm.frozen / nullif(mm.meters, 0), 2) AS freeze_pct,
       coalesce(rc.cycles, 0) AS cycles, coalesce(rc.due, 0) AS due, coalesce(rc.succeeded, 0) AS succeeded,
       round(100.0 * rc.succeeded / nullif(rc.due, 0), 2) AS success_pct
FROM channels c
LEFT JOIN LATERAL (
    SELECT count(*) AS meters, count(*) FILTER (WHERE {_FROZEN}) AS frozen
    FROM meters m WHERE m.channel_id = c.id AND {_IN_SERVICE}
) mm ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS cycles, sum(x.due) AS due, sum(x.succeeded) AS succeeded
    FROM read_cycles x
    WHERE x.channel_id = c.id AND x.cycle_at >= $1 AND x.cycle_at < $2 AND x.finished_at IS NOT NULL
) rc ON true
WHERE c.enabled OR mm.meters > 0
ORDER BY c.name
"""

_AREAS = f"""
WITH members AS (
    SELECT a.id AS area_id, a.supply_meter_id AS meter_id FROM areas a
    UNION
    SELECT am.area_id, am.meter_id FROM area_members am
    WHERE am.valid_from <= $1::date AND (am.valid_to IS NULL OR am.valid_to > $1::date)
), counted AS (
    SELECT mb.area_id, count(*) AS meters, count(*) FILTER (WHERE {_FROZEN}) AS frozen
    FROM members mb JOIN meters m ON m.id = mb.meter_id GROUP BY mb.area_id
)
SELECT a.name AS area, coalesce(k.meters, 0) AS meters, coalesce(k.frozen, 0) AS frozen,
       round(100.0 * k.frozen / nullif(k.meters, 0), 2) AS freeze_pct,
       l.supply_kwh, l.customers_kwh, l.loss_kwh, round(l.loss_pct::numeric, 2)::float8 AS loss_pct,
       a.loss_limit_pct,
       CASE WHEN l.area_id IS NULL THEN 'not computed' WHEN l.loss_kwh IS NULL THEN 'incomplete'
            WHEN l.loss_pct > a.loss_limit_pct THEN 'over limit' WHEN l.loss_kwh < 0 THEN 'negative'
            ELSE 'ok' END AS loss_status
FROM areas a
LEFT JOIN counted k ON k.area_id = a.id
LEFT JOIN line_losses l ON l.area_id = a.id AND l.day = $1::date
ORDER BY a.name
"""

# 漏抄: meters in service without the day's freeze, with why (first matching reason).
_MISSED = f"""
SELECT coalesce(m.name, m.address) AS meter, c.name AS channel,
       (SELECT a.name FROM areas a WHERE a.supply_meter_id = m.id
        UNION ALL
        SELECT a.name FROM area_members am JOIN areas a ON a.id = am.area_id
        WHERE am.meter_id = m.id AND am.valid_from <= $3 AND (am.valid_to IS NULL OR am.valid_to > $3)
        LIMIT 1) AS area,
       CASE WHEN NOT c.enabled THEN 'channel disabled'
            WHEN f.quality = 'missing' THEN 'backfill gave up'
            WHEN f.quality IS NOT NULL THEN 'only an ' || f.quality::text || ' value'
            WHEN last.ts IS NULL THEN 'never read'
            WHEN last.ts < $1 THEN 'no answer all day'
            ELSE 'answered, freeze not collected' END AS reason,
       last.ts AS last_read
FROM meters m
JOIN channels c ON c.id = m.channel_id
LEFT JOIN readings f ON f.meter_id = m.id AND f.ts = $2
    AND f.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
LEFT JOIN LATERAL (
    SELECT max(r.ts) AS ts FROM readings r
    WHERE r.meter_id = m.id AND r.ts <= $2 AND r.quality IN ('actual', 'freeze', 'backfilled')
      AND r.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
) last ON true
WHERE {_IN_SERVICE} AND NOT {_FROZEN}
ORDER BY c.name, m.id
"""

# 补抄: the day's intervals recovered after the fact (backfilled or freeze) and those given up.
_BACKFILL = """
SELECT c.name AS channel, count(DISTINCT r.meter_id) AS meters,
       count(*) FILTER (WHERE r.quality IN ('backfilled', 'freeze')) AS recovered,
       count(*) FILTER (WHERE r.quality = 'missing') AS given_up
FROM readings r JOIN meters m ON m.id = r.meter_id JOIN channels c ON c.id = m.channel_id
WHERE r.ts > $1 AND r.ts <= $2 AND r.quality IN ('backfilled', 'freeze', 'missing')
GROUP BY c.name ORDER BY c.name
"""

# 费控: relay commands created during the day, and fee-control refusals that started in it.
_FEE_CONTROL = """
SELECT 'command' AS what, action, cause AS reason, state::text AS outcome, count(*) AS count
FROM commands WHERE created_at >= $1 AND created_at < $2 GROUP BY action, cause, state
UNION ALL
SELECT 'refused', action, rule, 'refused', count(*)
FROM fee_control_refusals WHERE since >= $1 AND since < $2 GROUP BY action, rule
ORDER BY 1, 2, 3, 4
"""

# 异常: per rule, exceptions opened that day, resolved / closed automatically that day, active at its end.
_EXCEPTIONS = """
SELECT rule,
       count(*) FILTER (WHERE first_seen >= $1 AND first_seen < $2) AS opened,
       count(*) FILTER (WHERE state = 'resolved' AND closed_at >= $1 AND closed_at < $2) AS resolved,
       count(*) FILTER (WHERE state = 'auto_closed' AND closed_at >= $1 AND closed_at < $2) AS auto_closed,
       count(*) FILTER (WHERE closed_at IS NULL OR closed_at >= $2) AS active_at_end
FROM exceptions WHERE first_seen < $2 AND (closed_at IS NULL OR closed_at >= $1)
GROUP BY rule ORDER BY rule
"""

SECTIONS = ("channels", "areas", "missed", "backfill", "exceptions", "fee_control")
_QUERIES = {
    "channels": _CHANNELS,
    "areas": _AREAS,
    "missed": _MISSED,
    "backfill": _BACKFILL,
    "exceptions": _EXCEPTIONS,
    "fee_control": _FEE_CONTROL,
}


async def report_sections(
    conn: asyncpg.Connection, day: date, lo: datetime, hi: datetime
) -> dict[str, list[asyncpg.Record]]:
    """Every section's rows for ``day`` (line losses must be refreshed first), in one snapshot."""
    out: dict[str, list[asyncpg.Record]] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for name in SECTIONS:
            args: tuple[object, ...] = (
                (day, hi) if name == "areas" else (lo, hi, day) if name == "missed" else (lo, hi)
            )
            out[name] = await rows(conn, _QUERIES[name], *args)
    return out


COLUMNS: dict[str, tuple[str, ...]] = {
    "channels": (
        "channel",
        "kind",
        "meters",
        "frozen",
        "freeze_pct",
        "cycles",
        "due",
        "succeeded",
        "success_pct",
    ),
    "areas": (
        "area",
        "meters",
        "frozen",
        "freeze_pct",
        "supply_kwh",
        "customers_kwh",
        "loss_kwh",
        "loss_pct",
        "loss_limit_pct",
        "loss_status",
    ),
    "missed": ("meter", "channel", "area", "reason", "last_read"),
    "backfill": ("channel", "meters", "recovered", "given_up"),
    "exceptions": ("rule", "opened", "resolved", "auto_closed", "active_at_end"),
    "fee_control": ("what", "action", "reason", "outcome", "count"),
}
