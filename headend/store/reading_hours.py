"""The reading rules' hourly summary (migration 0070): per meter, summarised quantity and UTC hour
``(hour_end - 1 h, hour_end]``, the count, sum, min / max, first and last usable reading and the
decreases between consecutive readings of the hour. ``fold`` brings it up to date: it recomputes, from
the readings, exactly the hours the readings trigger marked dirty since the previous fold (a late or
re-qualified reading is folded in exactly once: recomputing is idempotent, and the log rows it
deletes are the ones its snapshot sees), keeps the hours from ``need`` on and drops older ones. It then
rebuilds, from the hours, the six-hour blocks (migration 0081) holding an hour it recomputed and builds
the blocks that have ended since the previous fold. The three are unlogged (migration 0088): a fold
that finds them emptied by a crash summarises every hour it keeps again.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg

SUMMARISED = (
    "energy_import_kwh",
    "energy_export_kwh",
    *(f"{kind}_{phase}_{unit}" for kind, unit in (("current", "a"), ("voltage", "v")) for phase in "abc"),
)
GOOD = "r.quality IN ('actual', 'backfilled', 'freeze')"  # estimated, suspect and missing never count
_QUANTITIES = f"(SELECT id FROM quantities WHERE name IN ({', '.join(repr(q) for q in SUMMARISED)}))"
_ALL_METERS = (-(2**31), 2**31 - 1)
BLOCK = timedelta(hours=6)


def hour_end_sql(expr: str, step: str = "1 hour") -> str:
    """SQL: the end of the summary hour (or ``step``, e.g. a block's ``6 hours``) holding the instant
    ``expr`` (an instant on the hour ends its hour)."""
    return (
        f"(date_bin('{step}', ({expr}) - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00')"
        f" + interval '{step}')"
    )


# After a crash the unlogged summary is empty, and so is reading_hours_kept (migration 0088): its row
# is put back and every hour from $1 (the first hour kept) to $2 or the latest reading is summarised.
_LOST = """
WITH k AS (INSERT INTO reading_hours_kept (kept_from, blocks_to) VALUES ($1, '-infinity')
           ON CONFLICT DO NOTHING RETURNING kept_from)
INSERT INTO reading_hours_dirty (lo, hi)
SELECT k.kept_from, greatest($2, (SELECT max(ts) FROM readings WHERE ts >= $1)) FROM k
"""

# $1 the first hour kept: the stretch from it to the hours kept so far (if it is earlier) is summarised
_KEEP = """
INSERT INTO reading_hours_dirty (lo, hi)
SELECT $1, kept_from FROM reading_hours_kept WHERE $1::timestamptz < kept_from
"""

_HOURS = f"""
WITH d AS (DELETE FROM reading_hours_dirty RETURNING lo, hi, meter_lo, meter_hi)
SELECT DISTINCT h.e, coalesce(d.meter_lo, $2) AS mlo, coalesce(d.meter_hi, $3) AS mhi
FROM d CROSS JOIN LATERAL generate_series({hour_end_sql("greatest(d.lo, $1)")}, {hour_end_sql("d.hi")},
                                   interval '1 hour') h(e)
WHERE h.e > $1
"""

_DROP = """
DELETE FROM reading_hours h USING unnest($1::timestamptz[], $2::integer[], $3::integer[]) k(e, mlo, mhi)
WHERE h.hour_end = k.e AND h.meter_id BETWEEN k.mlo AND k.mhi
"""

_FILL = f"""
INSERT INTO reading_hours (meter_id, quantity_id, hour_end, n, total, vmin, vmax, first_ts, first_value,
                           last_ts, last_value, drops_at, drops_prev, drops_value)
SELECT meter_id, quantity_id, e, count(*), sum(value), min(value), max(value),
       min(ts), max(value) FILTER (WHERE first), max(ts), max(value) FILTER (WHERE last),
       array_agg(ts) FILTER (WHERE value < prev), array_agg(prev) FILTER (WHERE value < prev),
       array_agg(value) FILTER (WHERE value < prev)
FROM (SELECT meter_id, quantity_id, e, ts, value,
             CASE WHEN prev_ts > e - interval '1 hour' THEN prev END AS prev,
             prev_ts IS NULL OR prev_ts <= e - interval '1 hour' AS first,
             next_ts IS NULL OR next_ts > e AS last
      FROM (SELECT r.meter_id, r.quantity_id, k.e, r.ts, r.value,
                   lag(r.value) OVER o AS prev, lag(r.ts) OVER o AS prev_ts, lead(r.ts) OVER o AS next_ts
            FROM readings r
            JOIN unnest($1::timestamptz[], $2::integer[], $3::integer[]) k(e, mlo, mhi)
              ON k.e = {hour_end_sql("r.ts")} AND r.meter_id BETWEEN k.mlo AND k.mhi
            WHERE r.ts > $4::timestamptz - interval '1 hour' AND r.ts <= $5
              AND r.quantity_id IN {_QUANTITIES} AND {GOOD}
            WINDOW o AS (PARTITION BY r.meter_id, r.quantity_id ORDER BY r.ts)) x) y
GROUP BY meter_id, quantity_id, e
"""

# The blocks: $1 the first block end wholly kept, $2 the end of the latest block ended. Returns the
# latest block end built (blocks_to, moved forward to $2) and the block ends that ended since the
# previous fold (every meter's block to build).
_BLOCKS_TO = """
WITH old AS (SELECT blocks_to FROM reading_hours_kept),
up AS (UPDATE reading_hours_kept SET blocks_to = greatest(blocks_to, $2) RETURNING blocks_to)
SELECT (SELECT blocks_to FROM up) AS upto,
       array(SELECT generate_series(greatest(old.blocks_to + interval '6 hours', $1), $2, interval '6 hours')
             FROM old) AS ended
"""

_DROP_BLOCKS = """
DELETE FROM reading_blocks b USING unnest($1::timestamptz[], $2::integer[], $3::integer[]) k(e, mlo, mhi)
WHERE b.block_end = k.e AND b.meter_id BETWEEN k.mlo AND k.mhi
"""

# A block from its hours: the drops between two of its hours (an hour's first reading below the last
# of the hour before it) join the hours' own, in time order.
_FILL_BLOCKS = """
INSERT INTO reading_blocks (meter_id, quantity_id, block_end, n, total, vmin, vmax, first_ts, first_value,
                            last_ts, last_value, drops_at, drops_prev, drops_value)
SELECT meter_id, quantity_id, e, sum(n), sum(total), min(vmin), max(vmax),
       min(first_ts), max(first_value) FILTER (WHERE prev IS NULL), max(last_ts),
       max(last_value) FILTER (WHERE last),
       reading_drops_cat(CASE WHEN first_value < prev THEN ARRAY[first_ts] END || drops_at ORDER BY hour_end),
       reading_drops_cat(CASE WHEN first_value < prev THEN ARRAY[prev] END || drops_prev ORDER BY hour_end),
       reading_drops_cat(CASE WHEN first_value < prev THEN ARRAY[first_value] END || drops_value
                         ORDER BY hour_end)
FROM (SELECT h.*, k.e, lag(h.last_value) OVER o AS prev, lead(h.hour_end) OVER o IS NULL AS last
      FROM reading_hours h
      JOIN unnest($1::timestamptz[], $2::integer[], $3::integer[]) k(e, mlo, mhi)
        ON h.hour_end > k.e - interval '6 hours' AND h.hour_end <= k.e AND h.meter_id BETWEEN k.mlo AND k.mhi
      WINDOW o AS (PARTITION BY h.meter_id, h.quantity_id, k.e ORDER BY h.hour_end)) x
GROUP BY meter_id, quantity_id, e
"""


def _disjoint(rows: list[tuple[datetime, int, int]]) -> tuple[list[datetime], list[int], list[int]]:
    """Per hour (or block), the dirty meter ranges merged, so that no reading is summarised twice."""
    by_hour: dict[datetime, list[tuple[int, int]]] = defaultdict(list)
    for end, mlo, mhi in rows:
        by_hour[end].append((mlo, mhi))
    merged: list[tuple[datetime, int, int]] = []
    for end, ranges in sorted(by_hour.items()):
        ranges.sort()
        lo, hi = ranges[0]
        for a, b in ranges[1:]:
            if a > hi + 1:
                merged.append((end, lo, hi))
                lo = a
            hi = max(hi, b)
        merged.append((end, lo, hi))
    return [m[0] for m in merged], [m[1] for m in merged], [m[2] for m in merged]


def _runs(ends: list[datetime]) -> list[tuple[int, int]]:
    """The slices of ``ends`` (sorted, repeated per meter range) whose hours follow each other."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(ends) + 1):
        if i == len(ends) or (ends[i] - ends[i - 1]).total_seconds() > 3600:
            runs.append((start, i))
            start = i
    return runs


async def fold(conn: asyncpg.Connection, need: datetime, now: datetime) -> int:
    """Bring the summary of the hours starting at ``need`` (on the hour) or later up to date, and the
    blocks ended by ``now``, in one transaction; return how many hour × meter ranges were recomputed."""
    assert need == hour_start(need), need
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('headend.reading_hours'))")
        await conn.execute(_LOST, need, now)
        await conn.execute(_KEEP, need)
        await conn.execute("UPDATE reading_hours_kept SET kept_from = $1", need)
        ends, los, his = _disjoint(
            [(r["e"], r["mlo"], r["mhi"]) for r in await conn.fetch(_HOURS, need, *_ALL_METERS)]
        )
        await conn.execute("DELETE FROM reading_hours WHERE hour_end <= $1", need)
        if ends:
            await conn.execute(_DROP, ends, los, his)
            await conn.execute("SET LOCAL work_mem = '64MB'")  # the sort of a rebuild stays in memory
            for a, b in _runs(ends):  # one scan per run of consecutive hours, not one over the gaps
                await conn.execute(_FILL, ends[a:b], los[a:b], his[a:b], ends[a], ends[b - 1])
        await _fold_blocks(conn, need, now, list(zip(ends, los, his, strict=True)))
    return len(ends)


async def _fold_blocks(
    conn: asyncpg.Connection, need: datetime, now: datetime, hours: list[tuple[datetime, int, int]]
) -> None:
    """Rebuild the ended blocks holding a refolded hour, build the blocks ended since the previous
    fold, drop the blocks not wholly kept."""
    first = block_end(need) + BLOCK  # the first block starting at ``need`` or later
    done = await conn.fetchrow(_BLOCKS_TO, first, _block_floor(now))
    assert done is not None
    todo = [(block_end(e), lo, hi) for e, lo, hi in hours if first <= block_end(e) <= done["upto"]]
    todo += [(e, *_ALL_METERS) for e in done["ended"]]
    await conn.execute("DELETE FROM reading_blocks WHERE block_end < $1", first)
    if todo:
        ends, los, his = _disjoint(todo)
        await conn.execute(_DROP_BLOCKS, ends, los, his)
        await conn.execute(_FILL_BLOCKS, ends, los, his)


def block_end(ts: datetime) -> datetime:
    """The end of the six-hour UTC block holding the instant ``ts`` (an instant on a block's end ends
    its block)."""
    floor = _block_floor(ts)
    return floor if floor == ts else floor + BLOCK


def _block_floor(ts: datetime) -> datetime:
    """The latest block end at or before ``ts``."""
    ts = ts.astimezone(UTC)
    return ts.replace(hour=ts.hour - ts.hour % 6, minute=0, second=0, microsecond=0)


def hour_start(ts: datetime) -> datetime:
    """The start of the UTC hour holding ``ts`` (``ts`` itself when on the hour)."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
