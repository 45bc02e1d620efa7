"""The meter page's and ``meters show``'s last read, latest reading per quantity and last contact
(``meter_overview``, looking at the last ``RECENT`` first) against an unbounded scan of the readings,
on the reporting login with the console's generic plans, in the storage mode the test server runs:
a meter read recently in every quantity (only bounded statements run), one whose newest readings are
older than the bound (the fallback), one with a quantity seen only long ago, and one never read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from asyncpg.connection import LoggedQuery

from headend.store import maintenance
from headend.store.overview import NO_CONTACT_KINDS, RECENT, meter_overview
from tests.support.logins import report_dsn

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
QUANTITIES = ("current_a_a", "energy_import_kwh", "voltage_a_v")

# per meter: (quantity, hours before NOW of the first and last reading, hourly, quality of the last)
SERIES: dict[str, list[tuple[str, int, int, str]]] = {
    "recent": [  # every quantity read in the last hours; the newest energy interval is estimated
        ("energy_import_kwh", 24 * 40, 1, "estimated"),
        ("voltage_a_v", 48, 2, "actual"),
        ("current_a_a", 30, 3, "missing"),
    ],
    "old": [  # nothing since three weeks
        ("energy_import_kwh", 24 * 60, 24 * 21, "actual"),
        ("current_a_a", 24 * 90, 24 * 89, "actual"),
    ],
    "long_ago": [  # energy now, voltage only two months ago, no current at all
        ("energy_import_kwh", 24 * 3, 1, "actual"),
        ("voltage_a_v", 24 * 61, 24 * 60, "actual"),
    ],
    "never": [],
}

_REFERENCE = """
SELECT (SELECT max(ts) FROM readings WHERE meter_id = $1 AND quality = 'actual') AS last_read,
       greatest((SELECT max(received_at) FROM readings WHERE meter_id = $1),
                (SELECT max(received_at) FROM events WHERE meter_id = $1 AND kind <> ALL($2::text[])))
           AS last_contact
"""

_REFERENCE_LATEST = """
SELECT q.name AS quantity, r.ts, r.value, r.quality::text AS quality, q.unit
FROM quantities q CROSS JOIN LATERAL (
    SELECT ts, value, quality FROM readings WHERE meter_id = $1 AND quantity_id = q.id
    ORDER BY ts DESC LIMIT 1) r
ORDER BY q.name
"""


def within_recent(arg: object) -> bool:
    """A statement's argument that is a bound on time within ``RECENT`` (an hour's leeway)."""
    return isinstance(arg, datetime) and arg > NOW - RECENT - timedelta(hours=1)


async def _seed(conn: asyncpg.Connection) -> dict[str, int]:
    """The four meters of ``SERIES``, each reading received 10 minutes after its interval; a clock
    event for ``old`` (contact, received before its last reading) and a timeout for ``long_ago`` (no
    contact)."""
    await maintenance.ensure_partitions(conn, NOW - timedelta(days=91), NOW + timedelta(days=1))
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('bus-1', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
    for name in QUANTITIES:
        await conn.execute("INSERT INTO quantities (name) VALUES ($1)", name)
    meters = {}
    for n, (meter, series) in enumerate(SERIES.items(), 1):
        meters[meter] = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id) VALUES ('dlt645-2007', $1,"
            " 'dlt645-generic', $2) RETURNING id",
            f"{n:012d}",
            channel,
        )
        for quantity, first, last, quality in series:
            await conn.execute(
                "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id, received_at)"
                " SELECT $1, q.id, t, CASE WHEN $5 = 'missing' AND t = $4 THEN NULL ELSE 1 END,"
                " CASE WHEN t = $4 THEN $5::reading_quality ELSE 'actual' END, $6, t + interval '10 minutes'"
                " FROM quantities q, generate_series($3::timestamptz, $4, interval '1 hour') AS t"
                " WHERE q.name = $2",
                meters[meter],
                quantity,
                NOW - timedelta(hours=first),
                NOW - timedelta(hours=last),
                quality,
                source,
            )
    for meter, kind, received in (("old", "clock_corrected", 24 * 30), ("long_ago", "timeout", 0)):
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, received_at)"
            " VALUES ('comm', $1, $2, $3, $4, $4)",
            kind,
            meters[meter],
            channel,
            NOW - timedelta(hours=received),
        )
    return meters


async def test_bounded_lookups_give_what_an_unbounded_scan_gives(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    reader = await asyncpg.connect(
        report_dsn(pg_dsn), server_settings={"plan_cache_mode": "force_generic_plan"}
    )
    logged: list[LoggedQuery] = []
    try:
        meters = await _seed(owner)
        reader.add_query_logger(logged.append)
        for meter, meter_id in meters.items():
            logged.clear()
            found = await meter_overview(reader, meter_id)
            whole = await owner.fetchrow(_REFERENCE, meter_id, list(NO_CONTACT_KINDS))
            latest = [dict(r) for r in await owner.fetch(_REFERENCE_LATEST, meter_id)]
            got = (found.fields["last_read"], found.fields["last_contact"], found.lists["latest"])
            assert got == (whole["last_read"], whole["last_contact"], latest), meter
            over_readings = [q for q in logged if "readings" in q.query]
            bounded = [q for q in over_readings if any(within_recent(a) for a in q.args)]
            if meter == "recent":  # read lately in every quantity the station knows: no whole-range scan
                assert over_readings and bounded == over_readings
            else:
                assert len(bounded) < len(over_readings)
        hours = [NOW - timedelta(hours=h) for h in (1, 2, 3, 24 * 21, 24 * 60)]
        recent = await meter_overview(reader, meters["recent"])
        assert recent.fields["last_read"] == hours[1]  # the newest interval is only estimated
        assert recent.fields["last_contact"] == hours[0] + timedelta(minutes=10)
        assert [(r["quantity"], r["ts"], r["quality"]) for r in recent.lists["latest"]] == [
            ("current_a_a", hours[2], "missing"),
            ("energy_import_kwh", hours[0], "estimated"),
            ("voltage_a_v", hours[1], "actual"),
        ]
        old = await meter_overview(reader, meters["old"])
        assert old.fields["last_read"] == hours[3]
        assert old.fields["last_contact"] == hours[3] + timedelta(minutes=10)
        assert [(r["quantity"], r["ts"]) for r in old.lists["latest"]] == [
            ("current_a_a", NOW - timedelta(hours=24 * 89)),
            ("energy_import_kwh", hours[3]),
        ]
        long_ago = await meter_overview(reader, meters["long_ago"])
        assert [(r["quantity"], r["ts"]) for r in long_ago.lists["latest"]] == [
            ("energy_import_kwh", hours[0]),
            ("voltage_a_v", hours[4]),
        ]
        never = await meter_overview(reader, meters["never"])
        assert (never.fields["last_read"], never.fields["last_contact"], never.lists["latest"]) == (
            None,
            None,
            [],
        )
    finally:
        await reader.close()
        await owner.close()
