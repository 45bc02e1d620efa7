"""Each meter's newest reading receipt (``meter_last_received``) is kept as readings are written, by
the writer's COPY and its staged merge alike, never going back for an older receipt, and the meter and
channel overviews' last contact is what a scan of the readings gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.store.overview import channel_overview, meter_overview
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter
from tests.support.logins import daemon_dsn

T0 = datetime(2026, 3, 1, tzinfo=UTC)
Q = timedelta(minutes=15)


async def _kept_and_scanned(conn: asyncpg.Connection) -> tuple[dict[int, datetime], dict[int, datetime]]:
    kept = dict(await conn.fetch("SELECT meter_id, received_at FROM meter_last_received"))
    scanned = dict(await conn.fetch("SELECT meter_id, max(received_at) FROM readings GROUP BY meter_id"))
    return kept, scanned


async def test_the_newest_receipt_follows_every_write(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    try:
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        a, b, c = [
            await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id, name)"
                " VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, $3) RETURNING id",
                f"00000000000{n}",
                channel,
                f"m{n}",
            )
            for n in (1, 2, 3)
        ]
        await writer.start()
        await writer.submit(
            [Reading(m, "energy_import_kwh", T0 + n * Q, 100.0 + n) for m in (a, b) for n in range(4)]
        )
        await writer.flush()
        kept, scanned = await _kept_and_scanned(conn)
        assert kept == scanned and set(kept) == {a, b}
        first = kept[a]

        # a batch holding an already stored reading goes through the staged merge; it backfills an
        # older interval of meter a, received now
        await writer.submit(
            [
                Reading(a, "energy_import_kwh", T0, 100.0),
                Reading(a, "energy_import_kwh", T0 - Q, 99.5, "backfilled", "profile"),
            ]
        )
        await writer.flush()
        kept, scanned = await _kept_and_scanned(conn)
        assert kept == scanned and kept[a] > first

        # a reading stored with an older receipt (an import keeping its own) does not set it back
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id, received_at)"
            " SELECT $1, id, $2, 1.0, (SELECT id FROM reading_sources LIMIT 1), $3 FROM quantities"
            " WHERE name = 'energy_import_kwh'",
            b,
            T0 + 10 * Q,
            T0,
        )
        kept, scanned = await _kept_and_scanned(conn)
        assert kept == scanned and kept[b] > T0

        shown = {m: (await meter_overview(conn, m)).fields["last_contact"] for m in (a, b, c)}
        assert shown == {a: scanned[a], b: scanned[b], c: None}
        listed = await channel_overview(conn, "bus-a")
        assert listed is not None and listed.fields["last_contact"] == max(scanned.values())
    finally:
        await writer.close()
        await conn.close()
