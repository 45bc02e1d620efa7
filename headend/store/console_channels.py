"""Read-only queries behind the web console's channel pages (run under the reporting login): every
channel's health at a glance, and the meters a channel holds in quarantine."""

from __future__ import annotations

import asyncpg

Row = dict[str, object]

# the latest quarantine event of each meter tells whether it is still quarantined (``until`` ahead)
_QUARANTINE = """
LEFT JOIN LATERAL (
    SELECT (x.details->>'until')::timestamptz AS until, x.occurred_at FROM events x
    WHERE x.meter_id = m.id AND x.category = 'comm' AND x.kind IN ('quarantined', 'quarantine_ended')
    ORDER BY x.occurred_at DESC, x.id DESC LIMIT 1) q ON true
"""

_CHANNELS = f"""
SELECT c.name, c.kind, c.settings->>'url' AS url, c.enabled,
       (SELECT count(*) FROM meters m WHERE m.channel_id = c.id AND m.removed_at IS NULL) AS meters,
       (SELECT k.finished_at FROM read_cycles k
        WHERE k.channel_id = c.id AND k.succeeded > 0 AND k.finished_at IS NOT NULL
        ORDER BY k.cycle_at DESC LIMIT 1) AS last_contact,
       (SELECT count(*) FROM events e WHERE e.channel_id = c.id AND e.category = 'comm'
        AND e.kind = 'timeout' AND e.occurred_at > now() - interval '24 hours') AS timeouts_24h,
       (SELECT count(*) FROM meters m {_QUARANTINE}
        WHERE m.channel_id = c.id AND m.removed_at IS NULL AND q.until > now()) AS quarantined,
       lc.cycle_at AS last_cycle_at, lc.due AS last_cycle_due, lc.succeeded AS last_cycle_succeeded,
       lc.utilisation AS last_cycle_utilisation
FROM channels c
LEFT JOIN LATERAL (
    SELECT cycle_at, due, succeeded, utilisation FROM read_cycles
    WHERE channel_id = c.id AND finished_at IS NOT NULL ORDER BY cycle_at DESC LIMIT 1) lc ON true
ORDER BY c.name
"""

_QUARANTINED = f"""
SELECT m.name, m.address, q.occurred_at AS since, q.until
FROM meters m JOIN channels c ON c.id = m.channel_id {_QUARANTINE}
WHERE c.name = $1 AND m.removed_at IS NULL AND q.until > now()
ORDER BY m.name
"""


async def channels(conn: asyncpg.Connection) -> list[Row]:
    """Every channel: meters, last contact, timeouts in 24 h, meters quarantined now, and its last
    complete read cycle (due, succeeded, utilisation).

    Last contact here is the end of the channel's last read cycle that read a meter, which the daemon
    records per cycle: the newest receipt of a reading (the channel page's, ``channel_overview``) needs
    a scan of the channel's readings, which for every channel at once reads the whole table."""
    return [dict(r) for r in await conn.fetch(_CHANNELS)]


async def quarantined(conn: asyncpg.Connection, channel: str) -> list[Row]:
    """The channel's meters quarantined now, since when and until when."""
    return [dict(r) for r in await conn.fetch(_QUARANTINED, channel)]
