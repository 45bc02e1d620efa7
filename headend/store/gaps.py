"""Queries for gap detection: interval times lacking a meter's gap quantity in ``readings``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from headend.store.results import rows

_GAPS_SQL = """
SELECT m.id AS meter_id, g.ts
FROM unnest($1::int[], $2::text[]) AS m(id, gap_quantity)
JOIN meters mt ON mt.id = m.id
CROSS JOIN LATERAL generate_series(
    to_timestamp(ceil(extract(epoch FROM greatest(mt.installed_at, $3)) / $5) * $5),
    $4::timestamptz, make_interval(secs => $5)) AS g(ts)
WHERE NOT EXISTS (
    SELECT 1 FROM readings r
    WHERE r.meter_id = m.id AND r.ts = g.ts
      AND r.quantity_id = (SELECT q.id FROM quantities q WHERE q.name = m.gap_quantity))
ORDER BY m.id, g.ts
"""


async def missing_intervals(
    conn: asyncpg.Connection,
    meter_ids: Sequence[int],
    gap_quantities: Sequence[str],
    since: datetime,
    upto: datetime,
    interval: float,
) -> list[asyncpg.Record]:
    """``(meter_id, ts)`` of every interval in ``[since, upto]`` (not before installation) where the
    meter's gap quantity has no reading, by meter then time."""
    return await rows(conn, _GAPS_SQL, list(meter_ids), list(gap_quantities), since, upto, interval)
