"""The exception rules as SQL: each one selects, over what is stored, the meters or areas whose condition
holds now (``subject``, ``evidence``), set-based; :mod:`headend.store.exceptions` opens, counts and
auto-closes the exceptions from that selection in the same statement.

Every query takes ``$1`` (the pass's time, UTC) and its own thresholds from ``$3`` on (``$2`` is the
auto-close delay of the surrounding statement); windows are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headend.vocabulary import ExceptionRule

Subject = Literal["meter", "area"]

_GOOD = "r.quality IN ('actual', 'backfilled', 'freeze')"  # estimated, suspect and missing never count


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


# $3 window, $4 tolerance kWh: the latest import register below the one before it by more than the
# tolerance: a stored reading below the stored one before it, or a reply the driver read below its last
# accepted value and did not store (a ``register_went_back`` event of the daemon, ``stored`` false)
REGISTER_BACKWARDS = RuleQuery(
    "register_backwards",
    "meter",
    f"""
    SELECT DISTINCT ON (meter_id) meter_id AS subject,
           jsonb_build_object('ts', ts, 'value', value, 'previous_ts', previous_ts, 'previous', previous,
                              'stored', stored)
               AS evidence
    FROM (SELECT meter_id, ts, value, previous, previous_ts, true AS stored
          FROM (SELECT r.meter_id, r.ts, r.value, lag(r.value) OVER w AS previous,
                       lag(r.ts) OVER w AS previous_ts
                FROM readings r WHERE r.quantity_id = {_IMPORT} AND {_GOOD} AND {_window("$3")}
                WINDOW w AS (PARTITION BY r.meter_id ORDER BY r.ts)) s
          UNION ALL
          SELECT meter_id, occurred_at, (details #>> '{{energy_import_kwh,value}}')::float8,
                 (details #>> '{{energy_import_kwh,previous}}')::float8, NULL, false
          FROM events
          WHERE category = 'comm' AND kind = 'register_went_back' AND details ? 'energy_import_kwh'
            AND occurred_at > $1::timestamptz - make_interval(secs => $3) AND occurred_at <= $1) b
    WHERE value < previous - $4
    ORDER BY meter_id, ts DESC
    """,
)

_SPANS = f"""
    span AS (SELECT r.meter_id, r.quantity_id, count(*) AS n, max(r.value) - min(r.value) AS change,
                    extract(epoch FROM max(r.ts) - min(r.ts)) AS span_s
             FROM readings r WHERE r.quantity_id IN ({_IMPORT}, {_EXPORT}) AND {_GOOD} AND {_window("$3")}
             GROUP BY r.meter_id, r.quantity_id)"""

# $3 window, $4 minimum mean current A, $5 flat kWh: neither register moves while current flows (flat
# over at least half the window: two close readings prove nothing)
METER_STOPPED = RuleQuery(
    "meter_stopped",
    "meter",
    f"""
    WITH {_SPANS},
    flowing AS (SELECT r.meter_id, avg(r.value) AS current_a FROM readings r
                WHERE r.quantity_id IN ({_CURRENTS}) AND {_GOOD} AND {_window("$3")} GROUP BY r.meter_id)
    SELECT s.meter_id AS subject,
           jsonb_build_object('import_change_kwh', s.change, 'readings', s.n,
                              'mean_current_a', round(c.current_a::numeric, 3), 'window_s', $3::float8)
               AS evidence
    FROM span s JOIN flowing c USING (meter_id)
    WHERE s.quantity_id = {_IMPORT} AND s.span_s >= $3 / 2 AND s.change <= $5 AND c.current_a >= $4
      AND NOT EXISTS (SELECT 1 FROM span x WHERE x.meter_id = s.meter_id AND x.quantity_id = {_EXPORT}
                      AND x.change > $5)
    """,
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
)

_LATEST_PHASES = """
    latest AS (SELECT DISTINCT ON (r.meter_id, r.quantity_id) r.meter_id, q.name, r.value, r.ts
               FROM readings r JOIN quantities q ON q.id = r.quantity_id
               WHERE r.quantity_id IN ({ids}) AND {good} AND {window}
               ORDER BY r.meter_id, r.quantity_id, r.ts DESC)"""

# $3 window, $4 volts: a phase's latest voltage below the threshold (失压 / 断相)
VOLTAGE_LOSS = RuleQuery(
    "voltage_loss",
    "meter",
    f"""
    WITH {_LATEST_PHASES.format(ids=_VOLTAGES, good=_GOOD, window=_window("$3"))}
    SELECT meter_id AS subject,
           jsonb_build_object('volts', jsonb_object_agg(name, value), 'ts', max(ts),
                              'lost', jsonb_agg(name ORDER BY name) FILTER (WHERE value < $4)) AS evidence
    FROM latest GROUP BY meter_id HAVING min(value) < $4
    """,
)

# $3 window, $4 imbalance %, $5 minimum current A: the three latest phase currents apart by more than
# the threshold, relative to the largest
CURRENT_IMBALANCE = RuleQuery(
    "current_imbalance",
    "meter",
    f"""
    WITH {_LATEST_PHASES.format(ids=_CURRENTS, good=_GOOD, window=_window("$3"))}
    SELECT meter_id AS subject,
           jsonb_build_object('amps', jsonb_object_agg(name, value), 'ts', max(ts),
                              'imbalance_pct',
                              round((100 * (max(value) - min(value)) / max(value))::numeric, 1))
               AS evidence
    FROM latest GROUP BY meter_id
    HAVING count(*) = 3 AND max(value) >= $5 AND 100 * (max(value) - min(value)) / max(value) > $4
    """,
)

# the register's growth from the first to the last reading (a register going backwards is no spike)
_GROWTH = """(array_agg(value ORDER BY ts DESC))[1] - (array_agg(value ORDER BY ts))[1] AS kwh,
             extract(epoch FROM max(ts) - min(ts)) AS secs"""

# $3 recent window, $4 history, $5 factor, $6 minimum kWh: the recent consumption rate above the factor
# times the meter's own rate over the history before it (a history without growth: no judgement)
CONSUMPTION_SPIKE = RuleQuery(
    "consumption_spike",
    "meter",
    f"""
    WITH e AS (SELECT r.meter_id, r.ts, r.value FROM readings r
               WHERE r.quantity_id = {_IMPORT} AND {_GOOD} AND {_window("$4")}),
    recent AS (SELECT meter_id, {_GROWTH} FROM e WHERE ts > $1::timestamptz - make_interval(secs => $3)
               GROUP BY meter_id HAVING count(*) >= 2),
    past AS (SELECT meter_id, {_GROWTH} FROM e WHERE ts <= $1::timestamptz - make_interval(secs => $3)
             GROUP BY meter_id HAVING count(*) >= 2)
    SELECT r.meter_id AS subject,
           jsonb_build_object('recent_kwh', round(r.kwh::numeric, 3), 'recent_s', r.secs,
                              'usual_kwh', round((p.kwh / p.secs * r.secs)::numeric, 3), 'history_s', p.secs)
               AS evidence
    FROM recent r JOIN past p USING (meter_id)
    WHERE r.secs > 0 AND p.secs > 0 AND p.kwh > 0 AND r.kwh >= $6 AND r.kwh / r.secs > $5 * p.kwh / p.secs
    """,
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
