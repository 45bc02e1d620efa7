"""The exception rules as SQL: each one selects, over what is stored, the meters or areas whose condition
holds now (``subject``, ``evidence``), set-based; :mod:`headend.store.exceptions` opens, counts and
auto-closes the exceptions from that selection in the same statement.

Every query takes ``$1`` (the pass's time, UTC) and its own thresholds from ``$3`` on (``$2`` is the
auto-close delay of the surrounding statement); windows are in seconds. The reading rules do not scan
the readings themselves: they read the window summary that one pass (``WINDOW_SUMMARY``) builds per
rules run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headend.store.reading_hours import GOOD, hour_end_sql
from headend.vocabulary import ExceptionRule

Subject = Literal["meter", "area"]

_GOOD = GOOD


def _q(name: str) -> str:
    return f"(SELECT id FROM quantities WHERE name = '{name}')"


def _window(seconds: str) -> str:
    return f"r.ts > $1::timestamptz - make_interval(secs => {seconds}) AND r.ts <= $1"


_IMPORT, _EXPORT = _q("energy_import_kwh"), _q("energy_export_kwh")
_CURRENTS = ", ".join(_q(f"current_{p}_a") for p in "abc")
_VOLTAGES = ", ".join(_q(f"voltage_{p}_v") for p in "abc")


@dataclass(frozen=True, slots=True)
class RuleQuery:
    """One rule: what it is about and the query selecting where its condition holds now."""

    rule: ExceptionRule
    subject: Subject
    firing: str
    reads_window: bool = False  # reads the pass's window summary (``WINDOW_SUMMARY``), built first


# The window summary: per meter and quantity, what the six reading rules need of the readings (a temp
# table, built at the start of a rules pass and dropped at its end); each reading rule then reads this
# summary instead of scanning the readings itself. $1 the pass's time, $2 window, $3 spike window, $4
# spike history (seconds), $5 register tolerance kWh. Over the rules' ``window``: the count, min / max /
# sum of the values, the first time, and the time of the latest drop of a register below the reading
# before it (both in the window) by more than the tolerance; the last time and value (the window ends
# at $1, so the last reading is the window's when the count is not 0). Over the spike history of the
# import register, split at the spike window: the first time and value after the cut, the first and
# last time and value before it.
#
# It is built from *segments*, not from every reading: the six-hour blocks (``reading_blocks``, the
# level above the hours, built by the same fold) that ended and hold no boundary of the pass (window
# start, spike history start, cut, the pass's time), the hours of the incremental hourly summary
# (``reading_hours``, :mod:`headend.store.reading_hours`, brought up to date first) of the other blocks
# that lie wholly on one side of each boundary, and the single readings of the few hours that hold a
# boundary (from ``readings``). A segment is wholly inside or outside every span, so each flag of a
# reading becomes a flag of its segment; each segment knows its neighbours' last / first reading, so
# the first and last readings of each span and the drops between segments are picked as before, and
# the drops inside an hour or a block come from the summary. Segments are ordered by ``pos`` (a block's
# or an hour's end, a reading's time): no reading of a boundary hour lies between two other hours, nor
# an hour between two blocks, so that order is the readings' order.
WINDOW_SUMMARY_TABLE = "exception_window"
_A = "$1::timestamptz - make_interval(secs => $2)"  # the window's start
_SINCE = "$1::timestamptz - make_interval(secs => $4)"  # the spike history's start
_CUT = "$1::timestamptz - make_interval(secs => $3)"  # the spike window's start
_QUANTITY_IDS = f"{_IMPORT}, {_EXPORT}, {_CURRENTS}, {_VOLTAGES}"
_BLOCK = "interval '6 hours'"


def _inner_drop(t: str) -> str:
    """SQL: the latest drop inside an hour or block row ``t`` by more than the tolerance ($5)."""
    return f"""CASE WHEN {t}.drops_at IS NOT NULL THEN
        (SELECT max(d.at) FROM unnest({t}.drops_at, {t}.drops_prev, {t}.drops_value) d(at, prev, value)
         WHERE d.value < d.prev - $5) END"""


def _segment(t: str, end: str) -> str:
    """SQL: the columns of a segment from an hour or block row ``t``."""
    return (
        f"{t}.meter_id, {t}.quantity_id, {t}.n, {t}.total, {t}.vmin, {t}.vmax, {t}.first_ts, {t}.first_value,"
        f" {t}.last_ts, {t}.last_value, {_inner_drop(t)} AS inner_drop, {t}.{end} AS pos"
    )


def _split(t: str) -> str:
    """SQL: a boundary of the pass (for the import register, also the spike history's start and the
    cut) falls between two readings of the hour row ``t``: its readings are read one by one."""
    return f"""({t}.first_ts <= {_A} AND {_A} < {t}.last_ts OR {t}.first_ts <= $1 AND $1 < {t}.last_ts
         OR {t}.quantity_id = {_IMPORT} AND ({t}.first_ts <= {_SINCE} AND {_SINCE} < {t}.last_ts
                                            OR {t}.first_ts <= {_CUT} AND {_CUT} < {t}.last_ts))"""


WINDOW_SUMMARY = f"""
CREATE TEMP TABLE {WINDOW_SUMMARY_TABLE} AS
WITH edge AS (SELECT DISTINCT {hour_end_sql("p")} AS e FROM unnest(ARRAY[{_A}, {_SINCE}, {_CUT}, $1]) p
              WHERE p <> {hour_end_sql("p")}),
blk AS (SELECT e FROM reading_hours_kept k,
               generate_series({hour_end_sql(f"least({_A}, {_SINCE})", "6 hours")} + {_BLOCK},
                               least(k.blocks_to, $1), {_BLOCK}) e
        WHERE e - {_BLOCK} >= k.kept_from
          AND NOT EXISTS (SELECT 1 FROM unnest(ARRAY[{_A}, {_SINCE}, {_CUT}, $1]) p
                          WHERE p > e - {_BLOCK} AND p < e)),
hr AS (SELECT e FROM generate_series({hour_end_sql(f"least({_A}, {_SINCE})")}, {hour_end_sql("$1")},
                                      interval '1 hour') e
       WHERE {hour_end_sql("e", "6 hours")} NOT IN (SELECT e FROM blk)),  -- the hours not read as blocks
seg AS (SELECT {_segment("b", "block_end")}
        FROM reading_blocks b
        WHERE b.block_end IN (SELECT e FROM blk) AND b.quantity_id IN ({_QUANTITY_IDS})
          AND (b.block_end - {_BLOCK} >= {_A}
               OR (b.quantity_id = {_IMPORT} AND b.block_end - {_BLOCK} >= {_SINCE}))
        UNION ALL
        SELECT {_segment("h", "hour_end")}
        FROM reading_hours h
        WHERE h.hour_end = ANY (ARRAY(SELECT e FROM hr))  -- by the time index, not a scan of every hour
          AND h.quantity_id IN ({_QUANTITY_IDS}) AND h.last_ts <= $1
          AND (h.first_ts > {_A} OR (h.quantity_id = {_IMPORT} AND h.first_ts > {_SINCE}))
          AND NOT {_split("h")}
        UNION ALL
        SELECT r.meter_id, r.quantity_id, 1, r.value, r.value, r.value, r.ts, r.value, r.ts, r.value,
               NULL, r.ts
        FROM reading_hours h
        JOIN readings r ON r.meter_id = h.meter_id AND r.quantity_id = h.quantity_id
                       AND r.ts > h.hour_end - interval '1 hour' AND r.ts <= h.hour_end
        WHERE h.hour_end = ANY (ARRAY(SELECT e FROM edge)) AND h.quantity_id IN ({_QUANTITY_IDS})
          AND {_split("h")}
          AND {_GOOD} AND r.ts <= $1 AND (r.ts > {_A} OR (r.quantity_id = {_IMPORT} AND r.ts > {_SINCE})))
SELECT meter_id, quantity_id,
       coalesce(sum(n) FILTER (WHERE w), 0) AS n, min(vmin) FILTER (WHERE w) AS vmin,
       max(vmax) FILTER (WHERE w) AS vmax, sum(total) FILTER (WHERE w) AS total,
       min(first_ts) FILTER (WHERE w) AS first_ts, max(last_ts) AS last_ts,
       max(last_value) FILTER (WHERE last) AS last_value, max(drop_ts) AS drop_ts,
       min(first_ts) FILTER (WHERE recent) AS recent_first_ts,
       max(first_value) FILTER (WHERE recent_first) AS recent_first,
       min(first_ts) FILTER (WHERE past) AS past_first_ts,
       max(first_value) FILTER (WHERE past_first) AS past_first,
       max(last_ts) FILTER (WHERE past) AS past_last_ts, max(last_value) FILTER (WHERE past_last) AS past_last
FROM (SELECT meter_id, quantity_id, n, total, vmin, vmax, first_ts, first_value, last_ts, last_value, w,
             next_ts IS NULL AS last,
             CASE WHEN w THEN greatest(
                 inner_drop,
                 CASE WHEN prev_ts > {_A} AND first_value < prev - $5 THEN first_ts END) END AS drop_ts,
             spiky AND first_ts > cut AS recent,
             spiky AND first_ts > cut AND (prev_ts IS NULL OR prev_ts <= cut) AS recent_first,
             spiky AND last_ts <= cut AS past,
             spiky AND last_ts <= cut AND (prev_ts IS NULL OR prev_ts <= since) AS past_first,
             spiky AND last_ts <= cut AND (next_ts IS NULL OR next_ts > cut) AS past_last
      FROM (SELECT seg.*, first_ts > {_A} AS w, quantity_id = {_IMPORT} AND first_ts > {_SINCE} AS spiky,
                   {_CUT} AS cut, {_SINCE} AS since,
                   lag(last_value) OVER o AS prev, lag(last_ts) OVER o AS prev_ts,
                   lead(first_ts) OVER o AS next_ts
            FROM seg
            WINDOW o AS (PARTITION BY meter_id, quantity_id ORDER BY pos)) a) s
GROUP BY meter_id, quantity_id
"""
# The same window summary computed from every reading of the window at each pass (session 8's
# statement, before the hourly summary): the reference ``tests/analytics/test_reading_hours.py``
# compares the incremental one against row for row, and ``bench/analytics_rules.py`` times; not used
# by the pass. ``{table}``: the temporary table it creates.
WINDOW_SUMMARY_FROM_READINGS = f"""
CREATE TEMP TABLE {{table}} AS
SELECT meter_id, quantity_id,
       count(*) FILTER (WHERE w) AS n, min(value) FILTER (WHERE w) AS vmin,
       max(value) FILTER (WHERE w) AS vmax, sum(value) FILTER (WHERE w) AS total,
       min(ts) FILTER (WHERE w) AS first_ts, max(ts) AS last_ts,
       max(value) FILTER (WHERE last) AS last_value, max(ts) FILTER (WHERE dropped) AS drop_ts,
       min(ts) FILTER (WHERE recent) AS recent_first_ts,
       max(value) FILTER (WHERE recent_first) AS recent_first,
       min(ts) FILTER (WHERE past) AS past_first_ts, max(value) FILTER (WHERE past_first) AS past_first,
       max(ts) FILTER (WHERE past) AS past_last_ts, max(value) FILTER (WHERE past_last) AS past_last
FROM (SELECT meter_id, quantity_id, ts, value, w, next_ts IS NULL AS last,
             w AND prev_ts > $1::timestamptz - make_interval(secs => $2) AND value < prev - $5 AS dropped,
             spiky AND ts > cut AS recent,
             spiky AND ts > cut AND (prev_ts IS NULL OR prev_ts <= cut) AS recent_first,
             spiky AND ts <= cut AS past,
             spiky AND ts <= cut
                 AND (prev_ts IS NULL OR prev_ts <= since) AS past_first,
             spiky AND ts <= cut AND (next_ts IS NULL OR next_ts > cut) AS past_last
      FROM (SELECT r.meter_id, r.quantity_id, r.ts, r.value,
                   r.ts > $1::timestamptz - make_interval(secs => $2) AS w,
                   r.quantity_id = {_IMPORT} AND r.ts > $1::timestamptz - make_interval(secs => $4) AS spiky,
                   $1::timestamptz - make_interval(secs => $3) AS cut,
                   $1::timestamptz - make_interval(secs => $4) AS since,
                   lag(r.value) OVER o AS prev, lag(r.ts) OVER o AS prev_ts, lead(r.ts) OVER o AS next_ts
            FROM readings r
            WHERE r.quantity_id IN ({_IMPORT}, {_EXPORT}, {_CURRENTS}, {_VOLTAGES}) AND {_GOOD}
              AND r.ts <= $1 AND (r.ts > $1::timestamptz - make_interval(secs => $2)
                                  OR (r.quantity_id = {_IMPORT}
                                      AND r.ts > $1::timestamptz - make_interval(secs => $4)))
            WINDOW o AS (PARTITION BY r.meter_id, r.quantity_id ORDER BY r.ts)) a) s
GROUP BY meter_id, quantity_id
"""

_W = WINDOW_SUMMARY_TABLE

# $3 window, $4 tolerance kWh: the latest import register below the one before it by more than the
# tolerance: a stored reading below the stored one before it (the summary's latest drop, its values
# looked up by key), or a reply the driver read below its last accepted value and did not store (a
# ``register_went_back`` event of the daemon, ``stored`` false)
REGISTER_BACKWARDS = RuleQuery(
    "register_backwards",
    "meter",
    f"""
    SELECT DISTINCT ON (meter_id) meter_id AS subject,
           jsonb_build_object('ts', ts, 'value', value, 'previous_ts', previous_ts, 'previous', previous,
                              'stored', stored)
               AS evidence
    FROM (SELECT s.meter_id, s.drop_ts AS ts, d.value, p.value AS previous, p.ts AS previous_ts,
                 true AS stored
          FROM {_W} s
          JOIN readings d ON d.meter_id = s.meter_id AND d.quantity_id = s.quantity_id AND d.ts = s.drop_ts
          CROSS JOIN LATERAL (SELECT r.ts, r.value FROM readings r
                              WHERE r.meter_id = s.meter_id AND r.quantity_id = s.quantity_id
                                AND r.ts < s.drop_ts AND {_GOOD}
                              ORDER BY r.ts DESC LIMIT 1) p
          WHERE s.quantity_id = {_IMPORT} AND s.drop_ts IS NOT NULL
          UNION ALL
          SELECT meter_id, occurred_at, (details #>> '{{energy_import_kwh,value}}')::float8,
                 (details #>> '{{energy_import_kwh,previous}}')::float8, NULL, false
          FROM events
          WHERE category = 'comm' AND kind = 'register_went_back' AND details ? 'energy_import_kwh'
            AND occurred_at > $1::timestamptz - make_interval(secs => $3) AND occurred_at <= $1
            AND (details #>> '{{energy_import_kwh,value}}')::float8
                < (details #>> '{{energy_import_kwh,previous}}')::float8 - $4) b
    ORDER BY meter_id, ts DESC
    """,
    reads_window=True,
)

_SPANS = f"""
    span AS (SELECT meter_id, quantity_id, n, vmax - vmin AS change,
                    extract(epoch FROM last_ts - first_ts) AS span_s
             FROM {_W} WHERE quantity_id IN ({_IMPORT}, {_EXPORT}) AND n > 0)"""

# $3 window, $4 minimum mean current A, $5 flat kWh: neither register moves while current flows (flat
# over at least half the window: two close readings prove nothing)
METER_STOPPED = RuleQuery(
    "meter_stopped",
    "meter",
    f"""
    WITH {_SPANS},
    flowing AS (SELECT meter_id, sum(total) / sum(n)::float8 AS current_a FROM {_W}
                WHERE quantity_id IN ({_CURRENTS}) AND n > 0 GROUP BY meter_id)
    SELECT s.meter_id AS subject,
           jsonb_build_object('import_change_kwh', s.change, 'readings', s.n,
                              'mean_current_a', round(c.current_a::numeric, 3), 'window_s', $3::float8)
               AS evidence
    FROM span s JOIN flowing c USING (meter_id)
    WHERE s.quantity_id = {_IMPORT} AND s.span_s >= $3 / 2 AND s.change <= $5 AND c.current_a >= $4
      AND NOT EXISTS (SELECT 1 FROM span x WHERE x.meter_id = s.meter_id AND x.quantity_id = {_EXPORT}
                      AND x.change > $5)
    """,
    reads_window=True,
)

# $3 window, $4 minimum export kWh, $5 flat kWh: energy registers as export while import stays flat
# (over at least half the window)
REVERSE_ENERGY = RuleQuery(
    "reverse_energy",
    "meter",
    f"""
    WITH {_SPANS}
    SELECT x.meter_id AS subject,
           jsonb_build_object('export_change_kwh', x.change, 'import_change_kwh', i.change,
                              'window_s', $3::float8)
               AS evidence
    FROM span x JOIN span i ON i.meter_id = x.meter_id AND i.quantity_id = {_IMPORT}
    WHERE x.quantity_id = {_EXPORT} AND x.change >= $4 AND i.span_s >= $3 / 2 AND i.change <= $5
    """,
    reads_window=True,
)

# The latest value of each phase in the window (phases are summarised over the window only), with its
# name: built only for the meters a rule selected first, so that the evidence is not built for every
# meter.
_PHASES = """
    FROM {table} s JOIN quantities q ON q.id = s.quantity_id
    WHERE s.quantity_id IN ({ids}) AND s.n > 0 AND s.meter_id IN (SELECT meter_id FROM hit)
    GROUP BY s.meter_id"""

# $3 volts: a phase's latest voltage in the window below the threshold (失压 / 断相)
VOLTAGE_LOSS = RuleQuery(
    "voltage_loss",
    "meter",
    f"""
    WITH hit AS (SELECT meter_id FROM {_W} WHERE quantity_id IN ({_VOLTAGES}) AND n > 0 AND last_value < $3)
    SELECT s.meter_id AS subject,
           jsonb_build_object('volts', jsonb_object_agg(q.name, s.last_value), 'ts', max(s.last_ts),
                              'lost', jsonb_agg(q.name ORDER BY q.name) FILTER (WHERE s.last_value < $3))
               AS evidence
    {_PHASES.format(ids=_VOLTAGES, table=_W)}
    """,
    reads_window=True,
)

# $3 imbalance %, $4 minimum current A: the three latest phase currents in the window apart by more
# than the threshold, relative to the largest
CURRENT_IMBALANCE = RuleQuery(
    "current_imbalance",
    "meter",
    f"""
    WITH hit AS (SELECT meter_id FROM {_W} WHERE quantity_id IN ({_CURRENTS}) AND n > 0 GROUP BY meter_id
                 HAVING count(*) = 3 AND max(last_value) >= $4
                    AND 100 * (max(last_value) - min(last_value)) / max(last_value) > $3)
    SELECT s.meter_id AS subject,
           jsonb_build_object('amps', jsonb_object_agg(q.name, s.last_value), 'ts', max(s.last_ts),
                              'imbalance_pct',
                              round((100 * (max(s.last_value) - min(s.last_value))
                                     / max(s.last_value))::numeric, 1))
               AS evidence
    {_PHASES.format(ids=_CURRENTS, table=_W)}
    """,
    reads_window=True,
)

# $3 factor, $4 minimum kWh: the import register's growth over the recent window (first to last
# reading; a register going backwards is no spike) at a rate above the factor times the meter's own
# rate over the history before it (a history without growth: no judgement)
CONSUMPTION_SPIKE = RuleQuery(
    "consumption_spike",
    "meter",
    f"""
    WITH g AS (SELECT meter_id, last_value - recent_first AS kwh,
                      extract(epoch FROM last_ts - recent_first_ts) AS secs,
                      past_last - past_first AS past_kwh,
                      extract(epoch FROM past_last_ts - past_first_ts) AS past_secs
               FROM {_W} WHERE quantity_id = {_IMPORT} AND recent_first_ts < last_ts
                 AND past_first_ts < past_last_ts)
    SELECT meter_id AS subject,
           jsonb_build_object('recent_kwh', round(kwh::numeric, 3), 'recent_s', secs,
                              'usual_kwh', round((past_kwh / past_secs * secs)::numeric, 3),
                              'history_s', past_secs)
               AS evidence
    FROM g
    WHERE secs > 0 AND past_secs > 0 AND past_kwh > 0 AND kwh >= $4 AND kwh / secs > $3 * past_kwh / past_secs
    """,
    reads_window=True,
)

# $3 window, $4 seconds: the latest clock check in the window found the clock further off than policy
CLOCK_OFFSET = RuleQuery(
    "clock_offset",
    "meter",
    """
    SELECT meter_id AS subject,
           jsonb_build_object('drift_s', drift, 'checked_at', occurred_at, 'action', action) AS evidence
    FROM (SELECT DISTINCT ON (meter_id) meter_id, occurred_at, (details ->> 'drift_s')::float8 AS drift,
                 details ->> 'action' AS action
          FROM events
          WHERE category = 'comm' AND kind IN ('clock_corrected', 'clock_still_off', 'clock_off')
            AND meter_id IS NOT NULL AND occurred_at > $1::timestamptz - make_interval(secs => $3)
            AND occurred_at <= $1
          ORDER BY meter_id, occurred_at DESC) c
    WHERE abs(drift) > $4
    """,
)

# $3 window, $4 event kinds: meter event records of those kinds that occurred in the window
TAMPER = RuleQuery(
    "tamper",
    "meter",
    """
    SELECT meter_id AS subject,
           jsonb_build_object('kinds', jsonb_agg(DISTINCT kind), 'events', count(*), 'last', max(occurred_at))
               AS evidence
    FROM events
    WHERE category = 'meter' AND kind = ANY ($4::text[]) AND meter_id IS NOT NULL
      AND occurred_at > $1::timestamptz - make_interval(secs => $3) AND occurred_at <= $1
    GROUP BY meter_id
    """,
)

# $3 seconds: an enabled meter, installed before the window, without a usable reading in it
NO_READ = RuleQuery(
    "no_read",
    "meter",
    f"""
    SELECT m.id AS subject,
           jsonb_build_object('last_read', (SELECT max(r.ts) FROM readings r WHERE r.meter_id = m.id
                                            AND r.ts <= $1 AND {_GOOD}), 'window_s', $3::float8) AS evidence
    FROM meters m
    WHERE m.enabled AND m.removed_at IS NULL AND m.installed_at <= $1::timestamptz - make_interval(secs => $3)
      AND NOT EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.id AND {_GOOD} AND {_window("$3")})
    """,
)

_LATEST_DAY = """
    latest AS (SELECT DISTINCT ON (l.area_id) l.area_id, l.day, l.loss_kwh, l.loss_pct, l.supply_kwh
               FROM line_losses l WHERE l.loss_kwh IS NOT NULL AND l.day >= $3::date
               ORDER BY l.area_id, l.day DESC)"""

# $3 first day considered: the latest complete day's loss rate above the area's own limit
LOSS_ABOVE_LIMIT = RuleQuery(
    "loss_above_limit",
    "area",
    f"""
    WITH {_LATEST_DAY}
    SELECT l.area_id AS subject,
           jsonb_build_object('day', l.day, 'loss_pct', round(l.loss_pct::numeric, 2),
                              'limit_pct', a.loss_limit_pct, 'loss_kwh', round(l.loss_kwh::numeric, 3))
               AS evidence
    FROM latest l JOIN areas a ON a.id = l.area_id
    WHERE l.loss_pct > a.loss_limit_pct
    """,
)

# $3 first day considered, $4 tolerance kWh: customers took more than the supply meter gave
NEGATIVE_LOSS = RuleQuery(
    "negative_loss",
    "area",
    f"""
    WITH {_LATEST_DAY}
    SELECT area_id AS subject,
           jsonb_build_object('day', day, 'loss_kwh', round(loss_kwh::numeric, 3),
                              'supply_kwh', round(supply_kwh::numeric, 3)) AS evidence
    FROM latest WHERE loss_kwh < -($4::float8)
    """,
)

# $3 first day considered, $4 percentage points, $5 minimum days of history: the latest loss rate
# away from the median of the area's previous 30 days by more than the threshold
LOSS_JUMP = RuleQuery(
    "loss_jump",
    "area",
    f"""
    WITH {_LATEST_DAY},
    history AS (SELECT l.area_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY h.loss_pct) AS median,
                       count(*) AS days
                FROM latest l JOIN line_losses h ON h.area_id = l.area_id AND h.day < l.day
                     AND h.day >= l.day - 30 AND h.loss_pct IS NOT NULL
                GROUP BY l.area_id)
    SELECT l.area_id AS subject,
           jsonb_build_object('day', l.day, 'loss_pct', round(l.loss_pct::numeric, 2),
                              'median_pct', round(h.median::numeric, 2), 'days', h.days) AS evidence
    FROM latest l JOIN history h USING (area_id)
    WHERE h.days >= $5 AND abs(l.loss_pct - h.median) > $4
    """,
)

RULES: dict[ExceptionRule, RuleQuery] = {
    q.rule: q
    for q in (
        REGISTER_BACKWARDS,
        METER_STOPPED,
        REVERSE_ENERGY,
        VOLTAGE_LOSS,
        CURRENT_IMBALANCE,
        CONSUMPTION_SPIKE,
        CLOCK_OFFSET,
        TAMPER,
        NO_READ,
        LOSS_ABOVE_LIMIT,
        NEGATIVE_LOSS,
        LOSS_JUMP,
    )
}
