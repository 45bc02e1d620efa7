"""The integration API (``/api/v1``) for a billing / CIS system, in this process against the real
PostgreSQL under the desk and reporting logins: scoped tokens (made by an admin on the console or
with ``headend operators token add --scope``; a missing scope is 403 and changes nothing, a revoked
or expired token 401, the database refuses a write the scope does not cover however the token is
used), readings and daily registers paged by a keyset cursor as the CLI export gives them, a payment
batch recorded once per reference, and relay command requests approved by another operator."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from fastapi.testclient import TestClient

from headend.billing import payments
from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.operators import authenticate_token, new_token, token_digest
from headend.secrets import MeterSecrets
from headend.store import api_tokens
from headend.store import operators as operator_store
from headend.store.maintenance import ensure_partitions
from simulators import BusSpec, start_bus
from tests.support.cli import headend_in_process
from tests.support.console_app import bearer, console_in_loop, console_in_process
from tests.support.engine import engine_for
from tests.support.logins import desk_dsn, report_dsn
from tests.support.operators import PASSWORD, add_operators, operator_env
from tests.support.postgres import run_sync
from tests.support.web import sign_in

ZONE = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 11, 2, tzinfo=ZONE)  # the first local day of the seeded readings
OPERATORS = {"o1": "viewer", "o2": "operator", "o3": "approver", "o4": "cashier", "o6": "admin"}
M1, M2, M3 = "000000000011", "000000000012", "000000000013"


async def _seed(pg_dsn: str) -> None:
    """Operators; meters M1 (multiplier 2, 15-minute registers over two local days, one estimated),
    M2 (midnight registers only), M3 (no readings, relay); prepaid account A-1 and postpaid A-2."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, **OPERATORS)
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        for address, name, multiplier in ((M1, "flat-1", 2), (M2, "flat-2", 1), (M3, "flat-3", 1)):
            await conn.execute(
                "INSERT INTO meters (protocol, address, model, channel_id, has_relay, name, multiplier,"
                " installed_at) VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true, $3, $4, $5)",
                address,
                channel,
                name,
                multiplier,
                DAY - timedelta(days=30),
            )
        await conn.execute(
            "INSERT INTO accounts (number, name, kind) VALUES ('A-1', 'Flat one', 'prepaid'),"
            " ('A-2', 'Flat two', 'postpaid')"
        )
        await ensure_partitions(
            conn, DAY.astimezone(UTC) - timedelta(days=1), DAY.astimezone(UTC) + timedelta(days=4)
        )
        quantity = await conn.fetchval(
            "INSERT INTO quantities (name, unit) VALUES ('energy_import_kwh', 'kWh') RETURNING id"
        )
        source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
        ids = {r["address"]: r["id"] for r in await conn.fetch("SELECT id, address FROM meters")}
        rows = []
        for n in range(2 * 96 + 1):  # two days of 15-minute registers, both midnights ends included
            ts = DAY + timedelta(minutes=15 * n)
            quality = "estimated" if n == 96 else "actual"
            rows.append((ids[M1], quantity, ts, 1000 + n * 0.25, quality, source))
        for n, value in enumerate((500.0, 510.5, 530.0)):
            rows.append((ids[M2], quantity, DAY + timedelta(days=n), value, "actual", source))
        await conn.copy_records_to_table(
            "readings",
            records=rows,
            columns=["meter_id", "quantity_id", "ts", "value", "quality", "source_id"],
        )
    finally:
        await conn.close()


def _sql(pg_dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return run_sync(run)


def _money(pg_dsn: str) -> tuple[object, ...]:
    """What a payment changes: payments, the ledger, balances and their audit."""
    found = _sql(
        pg_dsn,
        "SELECT (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM ledger) AS ledger,"
        " (SELECT coalesce(sum(balance), 0)::text FROM balances) AS balances,"
        " (SELECT count(*) FROM audit_log WHERE action LIKE 'payment.%') AS audits",
    )
    return tuple(found[0])


def _make_token(client: TestClient, operator: str, scopes: list[str], label: str = "cis") -> tuple[int, str]:
    """A scoped token made on the console by admin 6 (its session, with the CSRF token)."""
    made = client.post(
        "/api/tokens",
        json={"operator": operator, "label": label, "scopes": scopes, "days": 30},
        headers={"x-csrf-token": client.get("/api/me").json()["csrf"]},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return int(body["id"]), str(body["token"])


@pytest.fixture
def console(pg_dsn: str) -> Iterator[TestClient]:
    run_sync(lambda: _seed(pg_dsn))
    with console_in_process(pg_dsn) as client:
        response = sign_in(client, "6", PASSWORD)
        assert response.status_code == 303, response.text[:300]
        yield client


def test_scoped_tokens_narrow_the_role_and_end_when_revoked_or_expired(
    pg_dsn: str, console: TestClient
) -> None:
    run_sync(lambda: _add(pg_dsn, o7="operator,cashier"))
    reads_id, reads = _make_token(console, "7", ["readings:read"])
    _pay_id, pay = _make_token(console, "7", ["payments:write", "readings:read"], "bank import")
    cli = headend_in_process(
        "operators",
        "token",
        "add",
        "7",
        "--label",
        "cis commands",
        "--scope",
        "commands:write",
        "--scope",
        "commands:read",
        "--expires",
        "7d",
        "--operator",
        "6",
        "--dsn",
        pg_dsn,
        env=operator_env(),
    )
    assert cli.returncode == 0, cli.stderr
    first, secret = cli.stdout.splitlines()
    assert re.fullmatch(
        r"token 3 for operator 7 \(scopes commands:read, commands:write\), expires .* UTC:", first
    )
    listed = {t["label"]: t for t in console.get("/api/tokens").json()}
    assert {k: (v["scopes"], v["roles"]) for k, v in listed.items()} == {
        "cis": (["readings:read"], []),  # a read scope needs no role: the token acts with none
        "bank import": (["payments:write", "readings:read"], ["cashier"]),
        "cis commands": (["commands:read", "commands:write"], ["operator"]),
    }
    assert reads not in json.dumps(listed) and secret.startswith("hdt_")

    # a scope narrows the operator's roles, never widens them: operator 2 holds no cashier role
    wider = console.post(
        "/api/tokens",
        json={"operator": "2", "label": "x", "scopes": ["payments:write"]},
        headers={"x-csrf-token": console.get("/api/me").json()["csrf"]},
    )
    assert wider.status_code == 403 and "does not hold the cashier role" in wider.json()["detail"]
    unknown = headend_in_process(
        "operators",
        "token",
        "add",
        "7",
        "--label",
        "x",
        "--scope",
        "meters:write",
        "--operator",
        "6",
        "--dsn",
        pg_dsn,
        env=operator_env(),
    )
    both = headend_in_process(
        "operators",
        "token",
        "add",
        "7",
        "--label",
        "x",
        "--roles",
        "cashier",
        "--scope",
        "payments:write",
        "--operator",
        "6",
        "--dsn",
        pg_dsn,
        env=operator_env(),
    )
    assert (both.returncode, both.stderr) == (
        1,
        "error: give either --roles (a sign-in token) or --scope (an API token)\n",
    )
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == (
        "error: scopes must be a subset of readings:read, commands:read, payments:write, commands:write,"
        " got meters:write\n"
    )

    before = _money(pg_dsn)
    batch = {"payments": [{"account": "A-1", "amount": "10.00", "reference": "R-1"}]}
    refused = console.post("/api/v1/payments", json=batch, headers=bearer(reads))
    assert refused.status_code == 403 and refused.json() == {
        "detail": "the token does not carry the payments:write scope (it carries readings:read)"
    }
    assert _money(pg_dsn) == before
    assert (
        console.get("/api/v1/daily", params={"date": "2026-11-02"}, headers=bearer(reads)).status_code == 200
    )
    console_api = console.get("/api/accounts", headers=bearer(pay))
    assert console_api.status_code == 403 and console_api.json()["detail"] == (
        "a scoped API token is for /api/v1/ only"
    )

    async def database_refuses() -> str:  # the same token at the database, as a script's CLI would use it
        conn = await asyncpg.connect(desk_dsn(pg_dsn))
        try:
            who = await authenticate_token(conn, "7", reads, None)
            assert who.roles == ()
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as refusal:
                await payments.record_payment(conn, "A-1", payments.parse_amount("10"), "R-1", operator="7")
            return str(refusal.value)
        finally:
            await conn.close()

    assert "cashier" in run_sync(database_refuses)

    async def reporting_may_not() -> None:  # the reporting login neither signs in nor makes tokens
        conn = await asyncpg.connect(report_dsn(pg_dsn))
        try:
            for query, args in (
                ("SELECT headend_sign_in_api($1)", ("0" * 64,)),
                (
                    "SELECT headend_token_add_scoped('7', 'x', '{readings:read}', $1,"
                    " now() + interval '1 day')",
                    ("0" * 64,),
                ),
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(query, *args)
        finally:
            await conn.close()

    run_sync(reporting_may_not)
    assert _money(pg_dsn) == before

    revoked = console.post(
        f"/api/tokens/{reads_id}/revoke",
        json={"reason": "leaked"},
        headers={"x-csrf-token": console.get("/api/me").json()["csrf"]},
    )
    assert revoked.json() == {"id": reads_id, "revoked": True}
    gone = console.get("/api/v1/daily", params={"date": "2026-11-02"}, headers=bearer(reads))
    assert gone.status_code == 401 and gone.json() == {"detail": f"token {reads_id} (cis) was revoked"}
    _sql(
        pg_dsn,
        "UPDATE operator_tokens SET created_at = now() - interval '10 days',"
        " expires_at = now() - interval '1 second' WHERE label = 'bank import'",
    )
    late = console.post("/api/v1/payments", json=batch, headers=bearer(pay))
    assert late.status_code == 401 and "expired at" in late.json()["detail"]
    assert _money(pg_dsn) == before
    audited = _sql(
        pg_dsn,
        "SELECT actor, action, details->'scopes' AS scopes FROM audit_log"
        " WHERE action LIKE 'operator.token_%' ORDER BY id",
    )
    assert [(r["actor"], r["action"]) for r in audited] == [
        ("6", "operator.token_added"),
        ("6", "operator.token_added"),
        ("6", "operator.token_added"),
        ("6", "operator.token_revoked"),
    ]


async def _sign_in_tokens(pg_dsn: str, tokens: dict[str, str], role: str = "approver") -> None:
    """Unscoped sign-in tokens with ``role`` (made over the owner's connection)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        for operator, token in tokens.items():
            until = datetime.now(UTC) + timedelta(days=1)
            await operator_store.add_token(conn, operator, role, [role], token_digest(token), until)
    finally:
        await conn.close()


async def _add(pg_dsn: str, **roles: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, **roles)
    finally:
        await conn.close()


def test_the_operators_page_lists_creates_and_revokes_tokens(pg_dsn: str, console: TestClient) -> None:
    csrf = console.get("/api/me").json()["csrf"]
    page = console.get("/operators")
    assert 'href="/operators/tokens"' in page.text
    made = console.post(
        "/operators/tokens",
        data={"operator": "4", "label": "bank", "scope": ["payments:write"], "days": "30", "csrf": csrf},
    )
    assert made.status_code == 200, made.text[:300]
    secret = re.search(r'<code id="new-token">([^<]+)</code>', made.text)
    assert secret and secret.group(1).startswith("hdt_")
    listing = console.get("/operators/tokens").text
    assert secret.group(1) not in listing and "payments:write" in listing  # shown once
    assert (
        console.get(
            "/api/v1/daily", params={"date": "2026-11-02"}, headers=bearer(secret.group(1))
        ).status_code
        == 403
    )
    forged = console.post("/operators/tokens/1/revoke", data={"reason": "left", "csrf": "0" * 64})
    assert forged.status_code == 403 and "CSRF" in forged.text
    out = console.post("/operators/tokens/1/revoke", data={"reason": "left", "csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/operators/tokens"
    assert console.get("/api/tokens").json()[0]["revoked_at"] is not None
    assert "接口令牌" in listing and "创建令牌" in listing  # Chinese by default, English when chosen
    console.cookies.set("headend_lang", "en")
    assert "Create token" in console.get("/operators/tokens").text
    viewer = new_token()
    run_sync(lambda: _sign_in_tokens(pg_dsn, {"1": viewer}, "viewer"))
    for path in ("/operators/tokens", "/api/tokens"):
        refused = console.get(path, headers=bearer(viewer))
        assert refused.status_code == 403 and "does not hold the admin role" in refused.text


def _pages(
    client: TestClient, path: str, token: str, **params: object
) -> tuple[list[dict[str, object]], int]:
    """Every row of a paged feed, following ``next``, and how many pages it took."""
    rows: list[dict[str, object]] = []
    cursor, pages = None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=query, headers=bearer(token))
        assert page.status_code == 200, page.text[:300]
        body = page.json()
        rows += body["rows"]
        pages += 1
        cursor = body["next"]
        assert page.headers.get("x-next-cursor") == cursor
        if cursor is None:
            return rows, pages


def test_readings_and_daily_registers_are_paged_as_the_cli_export_gives_them(
    pg_dsn: str, console: TestClient
) -> None:
    _id, token = _make_token(console, "1", ["readings:read"])
    period = {"from": "2026-11-02", "to": "2026-11-04"}
    rows, pages = _pages(console, f"/api/v1/meters/{M1}/readings", token, **period, limit=50)
    assert pages == 4  # 192 readings of the two days (the closing midnight is the next day's)
    exported = headend_in_process(
        "export",
        "readings",
        "--intervals",
        "--format",
        "json",
        "--meter",
        M1,
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-04",
        "--dsn",
        pg_dsn,
    )
    assert exported.returncode == 0, exported.stderr
    assert rows == json.loads(exported.stdout)
    assert rows[0] == {
        "meter": "flat-1",
        "address": M1,
        "ts": "2026-11-02T00:00:00+08:00",
        "multiplier": 2.0,
        "value_kwh": 2000.0,
        "quality": "actual",
    }
    assert rows[96]["quality"] == "estimated" and rows[96]["value_kwh"] == 2048.0

    as_csv = console.get(
        f"/api/v1/meters/{M1}/readings",
        params={**period, "limit": 50},
        headers={**bearer(token), "accept": "text/csv"},
    )
    suffixed = console.get(
        f"/api/v1/meters/{M1}/readings.csv", params={**period, "limit": 50}, headers=bearer(token)
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.startswith(
        f"meter,address,ts,multiplier,value_kwh,quality\nflat-1,{M1},2026-11-02T00:00:00+08:00,"
    )
    assert as_csv.content == suffixed.content  # the same request gives the same bytes
    assert as_csv.headers["x-next-cursor"] == suffixed.headers["x-next-cursor"]
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(table) == 50 and table[1] == {k: str(v) for k, v in rows[1].items()}

    daily = console.get(f"/api/v1/meters/{M1}/daily", params=period, headers=bearer(token)).json()
    exported = headend_in_process(
        "export",
        "readings",
        "--format",
        "json",
        "--meter",
        M1,
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-04",
        "--dsn",
        pg_dsn,
    )
    assert daily["rows"] == json.loads(exported.stdout) and daily["next"] is None
    assert [(r["register_kwh"], r["consumption_kwh"], r["consumption_quality"]) for r in daily["rows"]] == [
        (2000.0, 48.0, "estimated"),  # the day ends on an estimated register
        (2048.0, 48.0, "estimated"),
    ]

    fleet, pages = _pages(console, "/api/v1/daily", token, date="2026-11-03", limit=2)
    assert pages == 2
    assert [
        (r["meter"], r["register_kwh"], r["consumption_kwh"], r["consumption_quality"]) for r in fleet
    ] == [
        ("flat-1", 2048.0, 48.0, "estimated"),
        ("flat-2", 510.5, 19.5, "valid"),
        ("flat-3", None, None, "missing"),
    ]
    again = console.get("/api/v1/daily", params={"date": "2026-11-03", "limit": 2}, headers=bearer(token))
    assert (
        again.content
        == console.get(
            "/api/v1/daily", params={"date": "2026-11-03", "limit": 2}, headers=bearer(token)
        ).content
    )
    other = console.get(
        "/api/v1/daily",
        params={"date": "2026-11-02", "cursor": again.json()["next"]},
        headers=bearer(token),
    )
    assert other.status_code == 400 and other.json() == {
        "detail": "the cursor belongs to another query: repeat the query it came with"
    }
    for params, status, detail in (
        ({"date": "2026-11-03", "cursor": "not-a-cursor"}, 400, "the cursor is not one this API gave"),
        ({"date": "11/03/2026"}, 400, "date must be YYYY-MM-DD, got '11/03/2026'"),
        ({"date": "2026-11-03", "quantity": "gas_m3"}, 404, "no readings of 'gas_m3' are stored"),
    ):
        refused = console.get("/api/v1/daily", params=params, headers=bearer(token))
        assert (refused.status_code, refused.json()["detail"]) == (status, detail)
    nobody = console.get("/api/v1/meters/999999999999/daily", params=period, headers=bearer(token))
    assert (
        nobody.status_code == 404 and nobody.json()["detail"] == "no meter named or addressed '999999999999'"
    )
    backwards = console.get(
        f"/api/v1/meters/{M1}/readings",
        params={"from": "2026-11-04", "to": "2026-11-02"},
        headers=bearer(token),
    )
    assert (
        backwards.status_code == 400
        and backwards.json()["detail"] == "to 2026-11-02 is not after from 2026-11-04"
    )
    schema = console.get("/api/openapi.json").json()
    assert {
        "/api/v1/meters/{address}/readings",
        "/api/v1/meters/{address}/daily",
        "/api/v1/daily",
        "/api/v1/payments",
        "/api/v1/commands",
        "/api/v1/commands/{command_id}",
        "/api/tokens",
    } <= set(schema["paths"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs <= set(schema["components"]["schemas"])  # every reference resolves
    batch = schema["paths"]["/api/v1/payments"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "text/csv"}


def test_a_payment_batch_is_recorded_once_per_reference(pg_dsn: str, console: TestClient) -> None:
    _id, token = _make_token(console, "4", ["payments:write"])
    batch = {
        "payments": [
            {"account": "A-1", "amount": "100.00", "reference": "BANK-1", "paid_at": "2026-11-03T09:30:00"},
            {"account": "A-2", "amount": "20.50", "reference": "BANK-2"},
            {"account": "A-9", "amount": "5", "reference": "BANK-3"},
            {"account": "A-1", "amount": "1.234", "reference": "BANK-4"},
        ]
    }
    done = console.post("/api/v1/payments", json=batch, headers=bearer(token))
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["recorded"], body["duplicate"], body["refused"]) == (2, 0, 2)
    assert [(r["row"], r["status"], r["reason"], r["balance"]) for r in body["results"]] == [
        (1, "recorded", None, "100.00"),
        (2, "recorded", None, "20.50"),
        (3, "refused", "unknown account 'A-9'", None),
        (4, "refused", "amount '1.234' must be positive, below 1E+12, with at most two decimals", None),
    ]
    after = _money(pg_dsn)
    retried = console.post("/api/v1/payments", json=batch, headers=bearer(token)).json()
    assert [r["status"] for r in retried["results"]] == ["duplicate", "duplicate", "refused", "refused"]
    assert _money(pg_dsn) == after  # a retried batch records nothing twice

    reused = (
        "account,amount,reference,paid_at\r\nA-1,100.00,BANK-1,\r\nA-1,99.00,BANK-2,\r\nA-1,7.00,BANK-5,\r\n"
    )
    sent = console.post(
        "/api/v1/payments", content=reused, headers={**bearer(token), "content-type": "text/csv"}
    ).json()
    assert [(r["status"], r["reason"]) for r in sent["results"]] == [
        ("duplicate", None),
        (
            "refused",
            "reference 'BANK-2' is already recorded as 20.50 to account 'A-2';"
            " a different payment needs its own reference",
        ),
        ("recorded", None),
    ]
    stored = _sql(
        pg_dsn,
        "SELECT p.reference, p.operator, p.source, p.paid_at FROM payments p ORDER BY p.id",
    )
    assert [(r["reference"], r["operator"], r["source"]) for r in stored] == [
        ("BANK-1", "4", "api"),
        ("BANK-2", "4", "api"),
        ("BANK-5", "4", "api"),
    ]
    assert stored[0]["paid_at"] == datetime(2026, 11, 3, 9, 30, tzinfo=ZONE)  # station time
    actors = _sql(pg_dsn, "SELECT DISTINCT actor FROM audit_log WHERE action = 'payment.recorded'")
    assert [r["actor"] for r in actors] == ["4"]

    before = _money(pg_dsn)
    for body_text, kind, detail in (
        (
            '{"payments": []}',
            "application/json",
            "payments: List should have at least 1 item after validation, not 0",
        ),
        (
            "account,amount\r\nA-1,5\r\n",
            "text/csv",
            "a CSV batch needs the header account,amount,reference[,paid_at]",
        ),
        ("{", "application/json", "body: Invalid JSON: EOF while parsing an object at line 1 column 1"),
    ):
        bad = console.post(
            "/api/v1/payments", content=body_text, headers={**bearer(token), "content-type": kind}
        )
        assert (bad.status_code, bad.json()["detail"]) == (400, detail)
    assert _money(pg_dsn) == before


def test_a_command_request_waits_for_another_approver_and_shows_its_outcome(
    pg_dsn: str, console: TestClient
) -> None:
    run_sync(lambda: _add(pg_dsn, o8="operator,approver"))
    _id, token = _make_token(console, "8", ["commands:write", "commands:read"])
    _id, reader = _make_token(console, "1", ["commands:read"])
    request = {"meter": M3, "action": "disconnect", "reason": "arrears per CIS"}
    before = _sql(pg_dsn, "SELECT count(*) FROM commands")[0][0]
    weak = console.post("/api/v1/commands", json=request, headers=bearer(reader))
    assert weak.status_code == 403 and "commands:write" in weak.json()["detail"]
    assert _sql(pg_dsn, "SELECT count(*) FROM commands")[0][0] == before
    made = console.post("/api/v1/commands", json=request, headers=bearer(token))
    assert made.status_code == 201, made.text
    command = made.json()
    assert command["awaiting_approval"] is True
    shown = console.get(f"/api/v1/commands/{command['id']}", headers=bearer(reader)).json()
    assert (shown["state"], shown["operator"], shown["action"], shown["evidence"]) == (
        "pending",
        "8",
        "disconnect",
        {},
    )
    assert ("8", "command.requested", "arrears per CIS") in [
        (a["actor"], a["action"], a["reason"]) for a in shown["audit"]
    ]
    # the requester holds approver too, but may not approve their own request; approver 3 may
    own, other = new_token(), new_token()
    run_sync(lambda: _sign_in_tokens(pg_dsn, {"8": own, "3": other}))
    path = f"/api/commands/{command['id']}/approve"
    refused = console.post(path, headers=bearer(own))
    assert refused.status_code == 403 and "must differ" in refused.json()["detail"]
    assert console.post(path, headers=bearer(other)).status_code == 200
    approved = console.get(f"/api/v1/commands/{command['id']}", headers=bearer(reader)).json()
    assert (approved["state"], approved["approved_by"], approved["awaiting_approval"]) == (
        "pending",
        "3",
        False,
    )
    unknown = console.get("/api/v1/commands/999999", headers=bearer(reader))
    assert unknown.status_code == 404


async def test_a_requested_disconnect_is_confirmed_by_read_back_on_a_simulated_meter(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The whole way: the CIS requests, an approver approves, the daemon's engine switches the
    simulated meter under its gates and reads the relay back; the API shows the evidence."""
    bus = await start_bus(BusSpec(meters=1, seed=23))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
        'model = "dlt645-generic"\nname = "flat-9"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o2="operator", o3="approver", o6="admin")
    await import_inventory(conn, read_inventory(inventory))
    approver = new_token()
    until = datetime.now(UTC) + timedelta(days=1)
    await operator_store.add_token(conn, "3", "approve", ["approver"], token_digest(approver), until)
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    try:
        async with console_in_loop(pg_dsn) as client:
            cis = new_token()
            await api_tokens.add_scoped_token(
                conn, "2", "cis", ["commands:read", "commands:write"], token_digest(cis), until
            )
            made = await client.post(
                "/api/v1/commands",
                json={"meter": meter.address, "action": "disconnect", "reason": "arrears per CIS"},
                headers=bearer(cis),
            )
            assert made.status_code == 201, made.text
            command_id = made.json()["id"]
            assert await run_pass(engine, datetime.now(UTC)) == []  # not sent before its approval
            approved = await client.post(f"/api/commands/{command_id}/approve", headers=bearer(approver))
            assert approved.status_code == 200, approved.text
            assert [s for _, s in await run_pass(engine, datetime.now(UTC))] == ["confirmed"]
            assert meter.model.relay.open
            shown = (await client.get(f"/api/v1/commands/{command_id}", headers=bearer(cis))).json()
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
    assert (shown["state"], shown["operator"], shown["approved_by"]) == ("confirmed", "2", "3")
    evidence = shown["evidence"]
    assert (evidence["status"], evidence["state"]["open"]) == ("confirmed", True)  # status word 3 read back
    assert evidence["evidence"]["event_record"]["operator"] == "00000002"  # the meter's own record
    assert [a["action"] for a in shown["audit"]][-1] == "command.confirmed"
