"""The console's channel pages against ``headend web`` on the test database: every channel's health
(last contact, timeouts, quarantined meters, last read cycle and its utilisation), one channel's
cycles, meters, line errors and quarantined meters, and the dial-in devices pending adoption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from headend.store.dialin import PendingRow, save_pending
from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import running_console, signed_in

NOW = datetime.now(UTC).replace(microsecond=0)


async def _seed(pg_dsn: str) -> None:
    """Two channels; bus-a with two meters, one quarantined for an hour after three timeouts, two
    complete read cycles; a dial-in device pending adoption."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="viewer")
        bus = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO channels (name, kind, address, enabled) VALUES ('bus-b', 'tcp', 'x:1', false)"
        )
        meters = {}
        for address, name in (("000000000001", "flat-1"), ("000000000002", "flat-2")):
            meters[name] = await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id, name) "
                "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, $3) RETURNING id",
                address,
                bus,
                name,
            )
        for minutes in (3, 2, 1):
            await conn.execute(
                "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at) "
                "VALUES ('comm', 'timeout', $1, $2, $3)",
                meters["flat-2"],
                bus,
                NOW - timedelta(minutes=minutes),
            )
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details) "
            "VALUES ('comm', 'quarantined', $1, $2, $3, jsonb_build_object('until', $4::text))",
            meters["flat-2"],
            bus,
            NOW,
            (NOW + timedelta(hours=1)).isoformat(),
        )
        for cycle, due, ok, busy in (
            (NOW - timedelta(minutes=30), 2, 2, 0.25),
            (NOW - timedelta(minutes=15), 2, 1, 0.5),
        ):
            await conn.execute(
                "INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, readings, started_at,"
                " finished_at, utilisation) VALUES ($1, $2::timestamptz, $3, $4, $4, $2::timestamptz,"
                " $2::timestamptz + interval '1 minute', $5)",
                bus,
                cycle,
                due,
                ok,
                busy,
            )
        await conn.execute(  # bus-b's one cycle read nothing: no contact
            "INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, started_at, finished_at)"
            " SELECT id, $1::timestamptz, 2, 0, $1::timestamptz, $1::timestamptz + interval '1 minute'"
            " FROM channels WHERE name = 'bus-b'",
            NOW - timedelta(minutes=5),
        )
        await save_pending(
            conn,
            [PendingRow("DTU0042", "dtu", "0.0.0.0:9000", "10.0.0.7:5555", NOW, NOW, 4, True)],
        )
    finally:
        await conn.close()


def test_channel_health_quarantine_and_pending_devices(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        viewer = signed_in(url, "1")
        listed = viewer.get("/api/channels")
        assert listed.status_code == 200, listed.text
        by_name = {c["name"]: c for c in listed.json()["channels"]}
        assert sorted(by_name) == ["bus-a", "bus-b"]
        bus = by_name["bus-a"]
        assert (bus["meters"], bus["timeouts_24h"], bus["quarantined"], bus["enabled"]) == (2, 3, 1, True)
        assert (bus["last_cycle_due"], bus["last_cycle_succeeded"], bus["last_cycle_utilisation"]) == (
            2,
            1,
            0.5,
        )
        # last contact: the end of the last cycle that read a meter (bus-a's 15 minutes ago: 1 of 2)
        assert datetime.fromisoformat(bus["last_contact"]) == NOW - timedelta(minutes=14)
        other = by_name["bus-b"]
        assert other["enabled"] is False and other["last_contact"] is None
        assert datetime.fromisoformat(other["last_cycle_at"]) == NOW - timedelta(minutes=5)
        assert [(p["identity"], p["status"], p["attempts"]) for p in listed.json()["pending"]] == [
            ("DTU0042", "held", 4)
        ]
        one = viewer.get("/api/channels/bus-a").json()
        assert one["success"] == {"cycles": 2, "due": 4, "succeeded": 3, "rate": 0.75}
        assert [q["name"] for q in one["quarantined"]] == ["flat-2"]
        assert [m["name"] for m in one["meters"]] == ["flat-1", "flat-2"]
        assert [e["kind"] for e in one["errors"]] == ["quarantined", "timeout", "timeout", "timeout"]
        assert viewer.get("/api/channels/nowhere").status_code == 404
        viewer.cookies.set("headend_lang", "en")
        page = viewer.get("/channels")
        assert page.status_code == 200 and "DTU0042" in page.text and 'href="/channels/bus-a"' in page.text
        assert "50 %" in page.text and 'id="nav-channels"' in page.text
        detail = viewer.get("/channels/bus-a")
        assert (
            detail.status_code == 200
            and "3/4 (75.0 %)" in detail.text
            and "Quarantined meters" in detail.text
        )
        assert viewer.get("/channels/nowhere").status_code == 404
        schema = viewer.get("/api/openapi.json").json()
        assert {"/api/channels", "/api/channels/{name}"} <= set(schema["paths"])
