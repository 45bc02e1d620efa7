"""CLI writes that sign in an operator: `inventory import` (admin) and `billing bill` (cashier), as real
processes against PostgreSQL: refused without an operator, with the wrong role or password (one line,
exit 1, nothing stored); accepted with the role, and the audit row names the operator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import asyncpg

from tests.support import cli
from tests.support.operators import PASSWORD, add_operators, operator_env

INVENTORY = (
    '[[channels]]\nname = "bus-1"\nurl = "tcp://192.0.2.10:8899"\n'
    '[[meters]]\nchannel = "bus-1"\nprotocol = "dlt645-2007"\naddress = "000000000042"\n'
    'model = "dlt645-generic"\n'
)
BILL = ("billing", "bill", "--from", "2026-11-01", "--to", "2026-11-08")


def headend(dsn: str, *args: str, password: str | None = PASSWORD) -> cli.CliResult:
    """``headend ARGS --dsn DSN``; ``password`` None: no password in the environment, stdin closed."""
    env = operator_env(password) if password is not None else operator_env()
    if password is None:
        del env["HEADEND_OPERATOR_PASSWORD"]
    return cli.headend(*args, "--dsn", dsn, env=env, stdin_closed=True)


async def counts(dsn: str) -> list[int]:
    """Rows in channels, meters, audit_log and ledger."""
    conn = await asyncpg.connect(dsn)
    try:
        return [
            await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("channels", "meters", "audit_log", "ledger")
        ]
    finally:
        await conn.close()


def assert_one_line_refusal(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode != 0, done.stdout
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_inventory_import_needs_a_signed_in_admin_and_is_audited(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o11="admin", o12="cashier,operator,approver,viewer")
    finally:
        await conn.close()
    path = tmp_path / "inv.toml"
    path.write_text(INVENTORY)
    before = await counts(pg_dsn)

    missing = headend(pg_dsn, "inventory", "import", str(path))
    assert_one_line_refusal(missing, "Missing option '--operator'")
    for nobody, why in (("", "is required"), ("ops", "must be 1-8 digits")):
        refused = headend(pg_dsn, "inventory", "import", str(path), "--operator", nobody)
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    for operator, password, message in (
        (
            "12",
            PASSWORD,
            "operator 12 does not hold the admin role (holds cashier, operator, approver, viewer)",
        ),
        ("11", "not-the-password", "operator 11: unknown, disabled or wrong password"),
        ("99", PASSWORD, "operator 99: unknown, disabled or wrong password"),
    ):
        refused = headend(pg_dsn, "inventory", "import", str(path), "--operator", operator, password=password)
        assert refused.returncode == 1 and refused.stderr.strip() == f"error: {message}", refused.stderr
        assert password not in refused.stdout + refused.stderr
    assert await counts(pg_dsn) == before  # nothing stored, nothing audited

    done = headend(pg_dsn, "inventory", "import", str(path), "--operator", "11")
    assert done.returncode == 0, done.stderr
    assert "imported 1 channel(s) and 1 meter(s)" in done.stdout
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT actor, entity_id, details FROM audit_log WHERE action = 'inventory.imported'"
        )
        assert await conn.fetchval("SELECT address FROM meters") == "000000000042"
    finally:
        await conn.close()
    assert [(r["actor"], r["entity_id"]) for r in rows] == [("11", "inv.toml")]
    assert json.loads(rows[0]["details"]) == {"file": "inv.toml", "channels": 1, "meters": 1}


async def test_billing_run_needs_a_signed_in_cashier_and_is_audited(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o21="cashier", o22="admin,operator,approver")
    finally:
        await conn.close()
    before = await counts(pg_dsn)
    assert_one_line_refusal(headend(pg_dsn, *BILL), "Missing option '--operator'")
    for operator, password, message in (
        ("22", PASSWORD, "operator 22 does not hold the cashier role (holds admin, operator, approver)"),
        ("21", "not-the-password", "operator 21: unknown, disabled or wrong password"),
        (" ", PASSWORD, "an operator id (工号, 1-8 digits) is required"),
    ):
        refused = headend(pg_dsn, *BILL, "--operator", operator, password=password)
        assert refused.returncode == 1 and refused.stderr.strip() == f"error: {message}", refused.stderr
    assert await counts(pg_dsn) == before

    done = headend(pg_dsn, *BILL, "--operator", "21")
    assert done.returncode == 0, done.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT actor, entity, entity_id, details FROM audit_log WHERE action = 'billing.run'"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["entity"]) for r in rows] == [("21", "billing_period")]
    assert rows[0]["entity_id"] == "2026-11-01T00:00:00+00:00/2026-11-08T00:00:00+00:00"
    assert json.loads(rows[0]["details"]) == {"billed": {}, "not_billed": 0, "due_days": 15}
