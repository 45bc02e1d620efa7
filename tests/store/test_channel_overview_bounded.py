"""The channel page's and ``channels show``'s last contact and each meter's last read
(``channel_overview``, looking at the last ``RECENT`` first) against an unbounded scan of the readings,
on the reporting login with the console's generic plans, in the storage mode the test server runs: a
channel whose meters were all read lately (only bounded statements over the readings run), one with a
meter read three weeks ago, one never read and a removed one, and a channel read only long ago."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from asyncpg.connection import LoggedQuery

from headend.store import maintenance
from headend.store.overview import channel_overview
from tests.store.test_meter_overview_bounded import NOW, within_recent
from tests.support.logins import report_dsn

# per channel, per meter: (quantity, hours before NOW of its first and last hourly reading, the last
# one's quality); a meter named "removed-..." is removed
CHANNELS: dict[str, dict[str, list[tuple[str, int, int, str]]]] = {
    "lately": {
        "a": [("energy_import_kwh", 48, 1, "estimated"), ("voltage_a_v", 30, 2, "actual")],
        "b": [("energy_import_kwh", 24 * 40, 3, "actual")],
    },
    "mixed": {
        "fresh": [("energy_import_kwh", 24, 5, "actual")],
        "old": [
            ("energy_import_kwh", 24 * 60, 24 * 21, "actual"),
            ("voltage_a_v", 24 * 9, 24 * 8, "suspect"),
        ],
        "never": [],
        "removed-1": [("energy_import_kwh", 24, 0, "actual")],  # the newest receipt, not listed
    },
    "quiet": {"c": [("energy_import_kwh", 24 * 50, 24 * 30, "actual")]},
}

_REFERENCE_CONTACT = """
SELECT max(r.received_at) FROM readings r JOIN meters m ON m.id = r.meter_id
JOIN channels c ON c.id = m.channel_id WHERE c.name = $1
"""

_REFERENCE_METERS = """
SELECT m.name, m.protocol, m.address, m.enabled,
       (SELECT max(r.ts) FROM readings r WHERE r.meter_id = m.id AND r.quality = 'actual') AS last_read
FROM meters m JOIN channels c ON c.id = m.channel_id WHERE c.name = $1 AND m.removed_at IS NULL
ORDER BY m.name
"""


async def _seed(conn: asyncpg.Connection) -> None:
    """``CHANNELS``, each reading received 10 minutes after its interval."""
    await maintenance.ensure_partitions(conn, NOW - timedelta(days=61), NOW + timedelta(days=1))
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
    for name in ("energy_import_kwh", "voltage_a_v", "current_a_a"):
        await conn.execute("INSERT INTO quantities (name) VALUES ($1)", name)
    n = 0
    for channel, meters in CHANNELS.items():
        channel_id = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:1') RETURNING id",
            channel,
        )
        for meter, series in meters.items():
            n += 1
            meter_id = await conn.fetchval(
                "INSERT INTO meters (name, protocol, address, model, channel_id)"
                " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic', $3) RETURNING id",
                meter,
                f"{n:012d}",
                channel_id,
            )
            for quantity, first, last, quality in series:
                await conn.execute(
                    "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id, received_at)"
                    " SELECT $1, q.id, t, 1, CASE WHEN t = $4 THEN $5::reading_quality ELSE 'actual' END, $6,"
                    " t + interval '10 minutes'"
                    " FROM quantities q, generate_series($3::timestamptz, $4, interval '1 hour') AS t"
                    " WHERE q.name = $2",
                    meter_id,
                    quantity,
                    NOW - timedelta(hours=first),
                    NOW - timedelta(hours=last),
                    quality,
                    source,
                )
            if meter.startswith("removed"):
                await conn.execute("UPDATE meters SET removed_at = now() WHERE id = $1", meter_id)


async def test_bounded_lookups_give_what_an_unbounded_scan_gives(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    reader = await asyncpg.connect(
        report_dsn(pg_dsn), server_settings={"plan_cache_mode": "force_generic_plan"}
    )
    logged: list[LoggedQuery] = []
    try:
        await _seed(owner)
        reader.add_query_logger(logged.append)
        for channel in CHANNELS:
            logged.clear()
            found = await channel_overview(reader, channel)
            assert found is not None
            contact = await owner.fetchval(_REFERENCE_CONTACT, channel)
            meters = [dict(r) for r in await owner.fetch(_REFERENCE_METERS, channel)]
            assert (found.fields["last_contact"], found.lists["meter_list"]) == (contact, meters), channel
            over_readings = [q for q in logged if "readings r" in q.query]
            bounded = [q for q in over_readings if any(within_recent(a) for a in q.args)]
            if channel == "lately":  # every meter read lately: no whole-range scan
                assert over_readings and bounded == over_readings
            else:
                assert len(bounded) < len(over_readings)
        hours = {h: NOW - timedelta(hours=h) for h in (0, 2, 3, 5, 24 * 30)}
        lately = await channel_overview(reader, "lately")
        assert lately is not None
        assert lately.fields["last_contact"] == hours[0] + timedelta(minutes=-50)  # a at 1 h, + 10 min
        assert [(m["name"], m["last_read"]) for m in lately.lists["meter_list"]] == [
            ("a", hours[2]),  # its newest interval is only estimated
            ("b", hours[3]),
        ]
        mixed = await channel_overview(reader, "mixed")
        assert mixed is not None
        assert mixed.fields["last_contact"] == hours[0] + timedelta(minutes=10)  # the removed meter's
        assert [(m["name"], m["last_read"]) for m in mixed.lists["meter_list"]] == [
            ("fresh", hours[5]),
            ("never", None),
            ("old", NOW - timedelta(hours=24 * 8 + 1)),  # its newest voltage is only suspect
        ]
        quiet = await channel_overview(reader, "quiet")
        assert quiet is not None and quiet.fields["last_contact"] == hours[24 * 30] + timedelta(minutes=10)
        assert await channel_overview(reader, "nowhere") is None
    finally:
        await reader.close()
        await owner.close()
