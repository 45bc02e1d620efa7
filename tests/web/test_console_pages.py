"""What the overview and meter pages show, from a seeded database, exactly: collection today per
channel and why each unread meter was not read, the fee-control state, a day's load curve (average
demand between readings) and daily consumption, as JSON and as the rendered page."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from headend.store.feecontrol import HALT_KEY
from headend.store.reading import Reading
from headend.store.writer import ReadingWriter
from tests.support.logins import daemon_dsn
from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import running_console, signed_in

STATION = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 5, 4, tzinfo=STATION)  # local midnight
Q = timedelta(minutes=15)


async def _seed(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
    try:
        await add_operators(conn, o1="viewer")
        ids = {}
        for name, enabled in (("bus-a", True), ("bus-off", False)):
            ids[name] = await conn.fetchval(
                "INSERT INTO channels (name, kind, address, enabled) VALUES ($1, 'tcp', '127.0.0.1:1', $2)"
                " RETURNING id",
                name,
                enabled,
            )
        meters = {}
        for n, (name, channel, enabled) in enumerate(
            (
                ("m-read", "bus-a", True),
                ("m-quiet", "bus-a", True),
                ("m-timeout", "bus-a", True),
                ("m-quar", "bus-a", True),
                ("m-held", "bus-a", True),
                ("m-disabled", "bus-a", False),
                ("m-off", "bus-off", True),
            )
        ):
            meters[name] = await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id, has_relay, name, enabled) "
                "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true, $3, $4) RETURNING id",
                f"{n + 1:012d}",
                ids[channel],
                name,
                enabled,
            )
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at) "
            "VALUES ('comm', 'timeout', $1, $2, $3)",
            meters["m-timeout"],
            ids["bus-a"],
            now,
        )
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details) "
            "VALUES ('comm', 'quarantined', $1, $2, $3, $4::jsonb)",
            meters["m-quar"],
            ids["bus-a"],
            now,
            json.dumps({"until": (now + timedelta(hours=1)).isoformat(), "failures": 3, "error": "timeout"}),
        )
        await conn.execute(
            "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at) "
            "VALUES ($1, 'disconnect', 'manual', '1', true, now() + interval '1 day')",
            meters["m-read"],
        )
        await conn.execute("INSERT INTO headend_settings (key, value) VALUES ($1, 'max_per_run')", HALT_KEY)
        await writer.start()
        m = meters["m-read"]
        today = datetime.combine(datetime.now(STATION).date(), time(0), STATION)
        await writer.submit(
            [
                Reading(m, "energy_import_kwh", DAY - Q, 100.0),
                Reading(m, "energy_import_kwh", DAY, 100.5),
                Reading(m, "energy_import_kwh", DAY + Q, 100.75, "backfilled", "profile"),
                Reading(m, "energy_import_kwh", DAY + 2 * Q, 100.75),
                Reading(m, "energy_import_kwh", DAY + 3 * Q, None, "missing", "backfill"),
                Reading(m, "energy_import_kwh", today, 120.0),
                Reading(meters["m-quiet"], "energy_import_kwh", today - Q, None, "missing", "backfill"),
            ]
        )
        await writer.flush()
        await conn.execute(
            "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts) VALUES "
            "($1, (SELECT id FROM quantities WHERE name = 'energy_import_kwh'), 'decrease', 'went back', $2)",
            meters["m-held"],
            now,
        )
    finally:
        await writer.close()
        await conn.close()


def test_the_overview_and_a_meter_as_json_and_as_pages(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn, tmp_path))
    with running_console(pg_dsn, tmp_path) as url:
        client = signed_in(url, "1")
        overview = client.get("/api/overview").json()
        assert overview["day"] == datetime.now(STATION).date().isoformat()
        assert overview["collection"] == [
            {"channel": "bus-a", "enabled": True, "meters": 5, "read": 1, "rate": 0.2},
            {"channel": "bus-off", "enabled": False, "meters": 1, "read": 0, "rate": 0.0},
        ]
        reasons = {m["name"]: m["reason"] for m in overview["not_read"]}
        assert reasons == {
            "m-quiet": "not_read_yet",
            "m-timeout": "no_reply",
            "m-quar": "quarantined",
            "m-held": "held",
            "m-off": "channel_disabled",
        }
        assert overview["fee_control"] == {
            "halted": True,
            "halted_by": "max_per_run",
            "in_flight": [{"state": "pending", "commands": 1, "awaiting_approval": 1}],
            "open_holds": 1,
        }
        page = client.get("/").text
        for label in ("尚未采集", "无应答", "隔离中", "VEE 挂起", "通道停用", "20.0 %", "自动断电已暂停"):
            assert label in page

        meter = client.get("/api/meters/m-read", params={"day": "2026-05-04"}).json()
        assert meter["meter"]["name"] == "m-read" and meter["meter"]["channel"] == "bus-a"
        curve = [(datetime.fromisoformat(p["ts"]), p["kw"], p["quality"]) for p in meter["load_curve"]]
        assert curve == [
            (DAY, 2.0, "actual"),
            (DAY + Q, 1.0, "backfilled"),
            (DAY + 2 * Q, 0.0, "actual"),
        ]
        daily = meter["consumption"]["bars"]
        assert meter["consumption"]["period"] == "day"
        assert daily[-2:] == [{"start": "2026-05-03", "kwh": None}, {"start": "2026-05-04", "kwh": 0.75}]
        assert len(daily) == 14 and [d["kwh"] for d in daily[:-1]] == [None] * 13
        weekly = client.get("/api/meters/m-read", params={"day": "2026-05-06", "period": "week"}).json()
        assert weekly["consumption"]["bars"][-2:] == [
            {"start": "2026-04-27", "kwh": None},  # no reading in the week before
            {"start": "2026-05-04", "kwh": 0.75},
        ]
        html = client.get("/meters/m-read", params={"day": "2026-05-06", "period": "month"}).text
        assert 'data-period="month"' in html and "月用电量" in html and ">2026-05</text>" in html
        assert 'data-days="0"' in html and '<rect class="bar"' not in html  # April has no reading
        exported = client.get(
            "/readings.csv", params={"meter": "m-read", "from": "2026-05-03", "to": "2026-05-04"}
        )
        assert exported.headers["content-type"] == "text/csv; charset=utf-8"
        assert exported.text.splitlines() == [
            "ts,value,consumption,quality",
            "2026-05-03T23:45:00+08:00,100.0,,actual",
            "2026-05-04T00:00:00+08:00,100.5,0.5,actual",
            "2026-05-04T00:15:00+08:00,100.75,0.25,backfilled",
            "2026-05-04T00:30:00+08:00,100.75,0.0,actual",
            "2026-05-04T00:45:00+08:00,,,missing",
        ]
        assert 'href="/readings.csv?meter=m-read&amp;from=2026-05-06&amp;to=2026-05-06"' in html
        assert client.get("/readings.csv", params={"meter": "nobody"}).status_code == 404
        assert client.get("/api/meters/m-read", params={"period": "year"}).status_code == 422
        assert client.get("/meters/m-read", params={"period": "year"}).status_code == 400
        html = client.get("/meters/m-read", params={"day": "2026-05-04"}).text
        drawn = re.findall(r'<circle class="point q-(\w+)"[^>]*data-ts="([^"]+)" data-kw="([^"]+)"', html)
        assert [(q, datetime.fromisoformat(ts), float(kw)) for q, ts, kw in drawn] == [
            (q, ts, kw) for ts, kw, q in curve
        ]
        assert re.findall(r'<rect class="bar"[^>]*data-day="([^"]+)" data-kwh="([^"]+)"', html) == [
            ("2026-05-04", "0.7500")
        ]
        assert 'id="relay-actions"' not in html  # a viewer
        assert client.get("/api/meters/nobody").status_code == 404
        assert client.get("/api/meters/m-read", params={"day": "May 4"}).json() == {
            "detail": "day must be YYYY-MM-DD, got 'May 4'"
        }
        assert client.get("/api/commands", params={"state": "lost"}).status_code == 400

    async def bound() -> int:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM operator_sessions"))
        finally:
            await conn.close()

    assert run_sync(bound) == 0  # every pooled connection was unbound after its request
