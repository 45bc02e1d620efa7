"""The console's consumption bars per local day, week and month from the hourly aggregate, in the
storage mode the test server runs (TimescaleDB's continuous aggregate, or with
HEADEND_EMBEDDED_TIMESCALEDB=off the native table and its live rows): part of the history refreshed,
the rest read live; a day without readings, and a suspect reading that is not consumption."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.store import maintenance
from headend.store.console import consumption
from headend.web.data import day_bounds, first_days
from tests.support.logins import report_dsn

STATION = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 2, 23, tzinfo=STATION)  # a Monday, local midnight: the register reads 0 kWh
LAST = datetime(2026, 5, 4, 12, tzinfo=STATION)  # the last reading (a Monday noon)
GAP = datetime(2026, 4, 15, tzinfo=STATION)  # a local day without any reading
SUSPECT = datetime(2026, 5, 3, 23, 45, tzinfo=STATION)  # marked suspect: not the day's last value


async def _seed(conn: asyncpg.Connection) -> int:
    """One meter whose register grows 1 kWh an hour, read every 15 minutes from T0 to LAST."""
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('bus-1', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id) VALUES ('dlt645-2007', '000000000001',"
        " 'dlt645-generic', $1) RETURNING id",
        channel,
    )
    energy = await conn.fetchval("INSERT INTO quantities (name) VALUES ('energy_import_kwh') RETURNING id")
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
    await maintenance.ensure_partitions(conn, T0, LAST)
    await conn.execute(
        "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
        " SELECT $1, $2, t, extract(epoch FROM t - $3) / 3600, 'actual', $4"
        " FROM generate_series($3, $5, interval '15 minutes') AS t WHERE NOT (t >= $6 AND t < $7)",
        meter,
        energy,
        T0,
        source,
        LAST,
        GAP,
        GAP + timedelta(days=1),
    )
    await conn.execute(
        "UPDATE readings SET value = 99999, quality = 'suspect' WHERE meter_id = $1 AND ts = $2",
        meter,
        SUSPECT,
    )
    # the aggregate holds March; the rest is computed from the readings when asked
    await maintenance.refresh_daily(conn, T0, datetime(2026, 4, 1, tzinfo=STATION))
    return int(meter)


async def _bars(
    meter: int, conn: asyncpg.Connection, day: date, period: str
) -> list[tuple[date, float | None]]:
    starts = first_days(day, period)
    start, _ = day_bounds(starts[0], STATION)
    _, end = day_bounds(day, STATION)
    found = dict(await consumption(conn, meter, start, end, STATION.key, period))
    return [(d, found.get(d)) for d in starts]


async def test_bars_per_local_day_week_and_month(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    reader = await asyncpg.connect(report_dsn(pg_dsn))
    try:
        meter = await _seed(owner)
        days = await _bars(meter, reader, date(2026, 4, 20), "day")
        assert days == [
            (date(2026, 4, 7) + timedelta(days=i), None if i in (8, 9) else 24.0) for i in range(14)
        ]  # 04-15 has no reading, so 04-16 has no day before to grow from
        days = await _bars(meter, reader, date(2026, 5, 4), "day")
        assert days[-3:] == [(date(2026, 5, 2), 24.0), (date(2026, 5, 3), 23.75), (date(2026, 5, 4), 12.5)]
        weeks = await _bars(meter, reader, date(2026, 5, 4), "week")
        assert [d for d, _ in weeks] == [date(2026, 2, 16) + timedelta(weeks=i) for i in range(12)]
        assert [v for _, v in weeks] == [None, None, *[168.0] * 8, 167.75, 12.5]
        months = await _bars(meter, reader, date(2026, 5, 4), "month")
        assert [d for d, _ in months] == [date(2025 + (5 + i) // 12, (5 + i) % 12 + 1, 1) for i in range(12)]
        assert [v for _, v in months] == [*[None] * 9, 744.0, 720.0, 84.25]
        assert await _bars(meter, reader, date(2026, 1, 31), "month") == [
            (d, None) for d in first_days(date(2026, 1, 31), "month")
        ]
    finally:
        await reader.close()
        await owner.close()
