"""The console's account pages against ``headend web`` on the test database: balances and the
arrears list, an account's ledger, bills and payments, and a cashier's payment recorded once per
reference (a retry with the same reference changes nothing; a reused one for another amount is refused)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import csrf_of, running_console, signed_in


async def _seed(pg_dsn: str) -> None:
    """A cashier and a viewer; a prepaid account in credit and a postpaid one in arrears."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="viewer", o4="cashier")
        await conn.execute(
            "INSERT INTO accounts (number, name, kind) VALUES ('A-1', 'Flat one', 'prepaid'),"
            " ('B-2', 'Shop two', 'postpaid')"
        )
        await conn.execute(
            "UPDATE accounts SET arrears = true, arrears_since = '2026-11-01T00:00:00+08:00'"
            " WHERE number = 'B-2'"
        )
    finally:
        await conn.close()


async def _money(pg_dsn: str) -> tuple[int, str, int]:
    """Payments stored, A-1's balance, payment audit entries."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        found = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM payments) AS paid,"
            " (SELECT balance::text FROM balances b JOIN accounts a ON a.id = b.account_id"
            "  WHERE a.number = 'A-1') AS balance,"
            " (SELECT count(*) FROM audit_log WHERE action = 'payment.recorded') AS audits"
        )
        return int(found["paid"]), str(found["balance"]), int(found["audits"])
    finally:
        await conn.close()


def test_a_cashier_records_a_payment_once_per_reference(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        cashier = signed_in(url, "4")
        headers = {"x-csrf-token": csrf_of(cashier)}
        body = {"amount": "120.50", "reference": "BANK-1"}
        first = cashier.post("/api/accounts/A-1/payments", json=body, headers=headers)
        assert first.status_code == 201, first.text
        assert first.json() == {
            "account": "A-1",
            "reference": "BANK-1",
            "recorded": True,
            "balance": "120.50",
        }
        again = cashier.post("/api/accounts/A-1/payments", json=body, headers=headers)
        assert again.json() == {
            "account": "A-1",
            "reference": "BANK-1",
            "recorded": False,
            "balance": "120.50",
        }
        assert run_sync(lambda: _money(pg_dsn)) == (1, "120.50", 1)
        reused = cashier.post(
            "/api/accounts/A-1/payments", json={"amount": "9.00", "reference": "BANK-1"}, headers=headers
        )
        assert reused.status_code == 409 and "already recorded as 120.50" in reused.json()["detail"]
        for bad, said in (
            ({"amount": "1.234", "reference": "BANK-2"}, "at most two decimals"),
            ({"amount": "-5", "reference": "BANK-2"}, "must be positive"),
            ({"amount": "abc", "reference": "BANK-2"}, "is not a number"),
        ):
            refused = cashier.post("/api/accounts/A-1/payments", json=bad, headers=headers)
            assert refused.status_code == 409 and said in refused.json()["detail"], refused.text
        unknown = cashier.post("/api/accounts/Z-9/payments", json=body | {"reference": "X"}, headers=headers)
        assert unknown.status_code == 409 and "unknown account 'Z-9'" in unknown.json()["detail"]
        assert run_sync(lambda: _money(pg_dsn)) == (1, "120.50", 1)

        form = {"amount": "30", "reference": "COUNTER-7", "csrf": csrf_of(cashier)}
        posted = cashier.post("/accounts/A-1/payments", data=form)
        assert posted.status_code == 303 and posted.headers["location"] == "/accounts/A-1?paid=recorded"
        repeated = cashier.post("/accounts/A-1/payments", data=form)
        assert repeated.headers["location"] == "/accounts/A-1?paid=already"
        assert run_sync(lambda: _money(pg_dsn)) == (2, "150.50", 2)

        shown = cashier.get("/api/accounts/A-1").json()
        assert shown["account"]["balance"] == "150.50" and shown["closing"] == "150.50"
        assert [(e["kind"], e["amount"], e["balance"]) for e in shown["ledger"]] == [
            ("payment", "120.50", "120.50"),
            ("payment", "30.00", "150.50"),
        ]
        assert [(p["reference"], p["amount"], p["source"], p["operator"]) for p in shown["payments"]] == [
            ("COUNTER-7", "30.00", "web", "4"),
            ("BANK-1", "120.50", "web", "4"),
        ]
        page = cashier.get("/accounts/A-1", params={"paid": "already"})
        assert page.status_code == 200 and 'id="record-payment"' in page.text and "COUNTER-7" in page.text
        assert 'id="paid"' in page.text
        assert cashier.get("/api/accounts/Z-9").status_code == 404
        assert (
            cashier.get("/api/accounts/A-1", params={"from": "2026-12-02", "to": "2026-12-01"}).status_code
            == 400
        )
        assert cashier.get("/api/accounts/A-1", params={"to": "0001-01-01"}).status_code == 400


def test_the_arrears_list_and_a_viewer_without_the_payment_form(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        viewer = signed_in(url, "1")
        listed = viewer.get("/api/accounts").json()
        assert [a["number"] for a in listed["accounts"]] == ["A-1", "B-2"]
        assert [(a["number"], a["kind"], a["balance"]) for a in listed["arrears"]] == [
            ("B-2", "postpaid", "0")
        ]
        viewer.cookies.set("headend_lang", "en")
        page = viewer.get("/accounts")
        assert page.status_code == 200 and "Arrears list" in page.text and 'href="/accounts/B-2"' in page.text
        account = viewer.get("/accounts/A-1")
        assert account.status_code == 200 and "record-payment" not in account.text
        assert 'id="nav-accounts"' in account.text
        schema = viewer.get("/api/openapi.json").json()
        assert {"/api/accounts", "/api/accounts/{number}", "/api/accounts/{number}/payments"} <= set(
            schema["paths"]
        )
