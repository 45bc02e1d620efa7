"""The console's VEE holds and tariffs pages against ``headend web`` on the test database: every
signed-in operator sees the open holds and the tariffs; an admin keeps a hold open with a note or
releases it through the CLI's service (refusals said in one line, nothing changed); a tariff's price
versions and time-of-use periods, newest prices first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from headend.store.tariffs import insert_prices, insert_revision, insert_tariff
from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import csrf_of, running_console, signed_in

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUL = datetime(2026, 7, 1, tzinfo=UTC)
SLOTS = ["08:00-22:00=0.62", "22:00-08:00=0.31"]
SUMMER = ["06-01..09-30:08:00-22:00=0.70", "08:00-22:00=0.62", "22:00-08:00=0.31"]


async def _seed(pg_dsn: str, first_ts: datetime) -> dict[str, int]:
    """A viewer and an admin; two meters on an account, a jump hold (its suspect reading stored) and a
    decrease hold; a flat tariff with two price versions and a time-of-use one with a revision."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="viewer", o6="admin")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meters = {}
        for n, name in enumerate(("flat-1", "flat-2"), 1):
            meters[name] = await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id, name) "
                "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, $3) RETURNING id",
                f"{n:012d}",
                channel,
                name,
            )
        energy = await conn.fetchval(
            "INSERT INTO quantities (name) VALUES ('energy_import_kwh') RETURNING id"
        )
        source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
            " VALUES ($1, $2, $3, 100.0, 'actual', $4), ($1, $2, $5, 900.0, 'suspect', $4)",
            meters["flat-1"],
            energy,
            first_ts - timedelta(minutes=15),
            source,
            first_ts,
        )
        holds = {}
        for name, rule, reason, previous, value in (
            ("flat-1", "jump", "900 kWh in 15 min", 100.0, 900.0),
            ("flat-2", "decrease", "went back", 50.0, 40.0),
        ):
            holds[name] = await conn.fetchval(
                "INSERT INTO vee_holds (meter_id, quantity_id, rule, reason, first_ts, previous_value, value)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                meters[name],
                energy,
                rule,
                reason,
                first_ts,
                previous,
                value,
            )
        home = await insert_tariff(conn, "home", "flat", {}, [("total", Decimal("0.56"))], JAN)
        await insert_prices(conn, home, [("total", Decimal("0.60"))], JUL)
        tou = await insert_tariff(
            conn, "tou-1", "tou", {"slots": SLOTS, "timezone": "Asia/Shanghai"}, [], JAN
        )
        await insert_revision(conn, tou, {"slots": SUMMER, "timezone": "Asia/Shanghai"}, JUL)
        await conn.execute(
            "INSERT INTO accounts (number, name, kind, tariff_id) VALUES ('A-1', 'Flat one', 'prepaid', $1)",
            home,
        )
        return holds
    finally:
        await conn.close()


async def _holds(pg_dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        found = await conn.fetch(
            "SELECT h.id, h.resolution, h.resolved_by, h.resolution_reason,"
            " (SELECT count(*) FROM vee_hold_notes n WHERE n.hold_id = h.id) AS notes,"
            " (SELECT string_agg(action || ':' || actor, ',' ORDER BY id) FROM audit_log"
            "  WHERE action LIKE 'vee.%' AND details->>'hold' = h.id::text) AS audits"
            " FROM vee_holds h ORDER BY h.id"
        )
        return [tuple(r) for r in found]
    finally:
        await conn.close()


def _tariffs_show_their_price_versions_and_periods(viewer: httpx.Client) -> None:
    """Every tariff listed; one's price versions newest first, another's periods by revision."""
    listed = viewer.get("/api/tariffs").json()["tariffs"]
    assert [(f["name"], f["kind"], f["currency"], f["accounts"], f["versions"]) for f in listed] == [
        ("home", "flat", "CNY", 1, 2),
        ("tou-1", "tou", "CNY", 0, 1),
    ]
    home = viewer.get("/api/tariffs/home").json()
    assert [(datetime.fromisoformat(v["from"]), v["rates"]) for v in home["rates"]] == [
        (JUL, [{"register": "total", "price": "0.600000"}]),
        (JAN, [{"register": "total", "price": "0.560000"}]),
    ]
    tou = viewer.get("/api/tariffs/tou-1").json()
    assert tou["rates"] == []
    assert [(d["from"] and datetime.fromisoformat(d["from"]), d["periods"]) for d in tou["definitions"]] == [
        (None, SLOTS),
        (JUL, SUMMER),
    ]
    page = viewer.get("/tariffs/tou-1").text
    assert "06-01..09-30:08:00-22:00=0.70" in page and "分时电价" in page
    assert "0.600000" in viewer.get("/tariffs/home").text
    assert 'href="/tariffs/tou-1"' in viewer.get("/tariffs").text
    missing = viewer.get("/api/tariffs/nope")
    assert missing.status_code == 404 and missing.json() == {"detail": "unknown tariff 'nope'"}
    schema = viewer.get("/api/openapi.json").json()["paths"]
    assert {"/api/vee", "/api/vee/{hold_id}/release", "/api/vee/{hold_id}/keep", "/api/tariffs"} <= set(
        schema
    )


def test_holds_kept_or_released_by_an_admin_and_tariffs_shown(pg_dsn: str, tmp_path: Path) -> None:
    first_ts = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ids = run_sync(lambda: _seed(pg_dsn, first_ts))
    jump, decrease = ids["flat-1"], ids["flat-2"]
    with running_console(pg_dsn, tmp_path) as url:
        viewer = signed_in(url, "1")
        listed = viewer.get("/api/vee").json()
        assert [(h["id"], h["meter"], h["rule"], h["notes"]) for h in listed["open"]] == [
            (jump, "flat-1", "jump", []),
            (decrease, "flat-2", "decrease", []),
        ]
        assert listed["resolved"] == []
        page = viewer.get("/vee").text
        assert "900 kWh in 15 min" in page and "示值突增" in page and "/release" not in page

        admin = signed_in(url, "6")
        csrf = csrf_of(admin)
        kept = admin.post(
            f"/vee/{decrease}/keep", data={"note": "tenant called: meter swapped", "csrf": csrf}
        )
        assert kept.status_code == 303 and kept.headers["location"] == "/vee"
        refused = admin.post(
            f"/api/vee/{decrease}/release",
            json={"resolution": "accepted", "reason": "looks fine"},
            headers={"x-csrf-token": csrf},
        )
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"hold {decrease}: a decrease is not consumption; record the replacement or a correction"
        )
        for bad, said in (
            (
                {"resolution": "deleted", "reason": "x"},
                "resolution must be one of accepted, replaced, corrected",
            ),
            ({"resolution": "corrected", "reason": "x", "value": "lots"}, "value must be a number of kWh"),
        ):
            response = admin.post(f"/vee/{jump}/release", data={**bad, "csrf": csrf})
            assert response.status_code == 409 and said in response.text
        assert admin.post("/api/vee/999/keep", json={"note": "x"}, headers={"x-csrf-token": csrf}).json() == {
            "detail": "no open hold 999"
        }
        released = admin.post(
            f"/api/vee/{jump}/release",
            json={"resolution": "accepted", "reason": "new heat pump, checked on site"},
            headers={"x-csrf-token": csrf},
        )
        assert released.status_code == 200 and released.json() == {"id": jump, "open": False}

        after = viewer.get("/api/vee").json()
        assert [(h["id"], [(n["operator"], n["note"]) for n in h["notes"]]) for h in after["open"]] == [
            (decrease, [("6", "tenant called: meter swapped")])
        ]
        assert [(h["id"], h["resolution"], h["resolved_by"]) for h in after["resolved"]] == [
            (jump, "accepted", "6")
        ]
        page = admin.get("/vee").text
        assert "tenant called: meter swapped" in page and f'action="/vee/{decrease}/release"' in page
        _tariffs_show_their_price_versions_and_periods(viewer)
    assert run_sync(lambda: _holds(pg_dsn)) == [
        (jump, "accepted", "6", "new heat pump, checked on site", 0, "vee.accepted:6"),
        (decrease, None, None, None, 1, "vee.noted:6"),
    ]
