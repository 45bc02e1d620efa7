"""Bad command-line input: one line naming the problem, a non-zero exit code, nothing stored.

Field commands are refused before any bus is opened; database commands before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from headend.store import operators as operator_store
from tests.inputs.harness import assert_refused, headend, module_database, row_counts
from tests.support.operators import PASSWORD, add_operators, operator_env
from tests.support.postgres import PgServer, run_sync

BIG = "99999999999999999999"
TCP = "tcp://127.0.0.1:9"  # nothing listens: a case that got past validation would fail differently
GW = "modbus-tcp://127.0.0.1:9"
AT = "2026-11-20T10:30:00+08:00"
METER = "000000000001"  # a write names one meter by its full 12-digit address
# operators of the module's database, one per role (all sign in with PASSWORD), and one disabled
CASHIER, ADMIN, OPERATOR, APPROVER, VIEWER, DISABLED = "1001", "1002", "1003", "1004", "1005", "1006"
REPLACE = ("billing", "replace", "Old", "New", "--operator", ADMIN, "--at", AT)
INVENTORY = (
    '[[channels]]\nname = "bus"\nurl = "tcp://192.0.2.80:8899"\n'
    '[[meters]]\nchannel = "bus"\nprotocol = "dlt645-2007"\naddress = "1"\nmodel = "dlt645-generic"\n'
    'name = "Old"\naccount = "A1"\n'
    '[[meters]]\nchannel = "bus"\nprotocol = "dlt645-2007"\naddress = "2"\nmodel = "dlt645-generic"\n'
    'name = "New"\n'
)

# (case id, arguments, exit code, message the one error line must contain); no database needed
FIELD_CASES: list[tuple[str, tuple[str, ...], int, str]] = [
    ("read-baud-zero", ("read", f"{TCP}?baud=0", "-a", "1"), 1, "baud must be one of 300"),
    ("read-retries-negative", ("read", f"{TCP}?retries=-5", "-a", "1"), 1, "retries must be 0..10"),
    ("read-stopbits", ("read", "serial:///dev/ttyS0?stopbits=3", "-a", "1"), 1, "stopbits must be 1 or 2"),
    ("read-scheme", ("read", "ftp://nowhere", "-a", "1"), 1, "unsupported channel scheme 'ftp'"),
    (
        "read-modbus-tcp-default-protocol",
        ("read", GW, "-a", "1"),
        1,
        "protocol dlt645-2007 cannot run on a modbus-tcp:// channel (use serial://, tcp://, dtu://,"
        " gdw1376://, gdw1376+tcp://); for a Modbus meter pass --protocol modbus --unit N",
    ),
    (
        "scan-modbus-tcp-default-protocol",
        ("scan", GW),
        1,
        "protocol dlt645-2007 cannot run on a modbus-tcp://",
    ),
    ("read-rtu-over-tcp-dlt645", ("read", "rtu-over-tcp://127.0.0.1:9", "-a", "1"), 1, "cannot run on a rtu"),
    ("clock-modbus-tcp-1997", ("clock", GW, "-p", "dlt645-1997", "-a", "1"), 1, "dlt645-1997 cannot run"),
    (
        "read-unit-zero",
        ("read", TCP, "-p", "modbus", "--unit", "0"),
        1,
        "--unit must be 1..247 (0 is broadcast)",
    ),
    ("read-unit-248", ("read", GW, "-p", "modbus", "--unit", "248"), 1, "--unit must be 1..247"),
    (
        "read-unit-negative",
        ("read", GW, "-p", "modbus", "--unit", "-3"),
        1,
        "--unit must be 1..247 (0 is broadcast), got -3",
    ),
    ("read-unit-huge", ("read", GW, "-p", "modbus", "--unit", BIG), 1, f"(0 is broadcast), got {BIG}"),
    ("read-no-unit", ("read", GW, "-p", "modbus"), 1, "--unit is required for Modbus meters"),
    ("read-protocol", ("read", TCP, "-p", "iec62056", "-a", "1"), 1, "--protocol must be one of"),
    ("read-no-address", ("read", TCP), 1, "--address is required for DL/T 645 meters"),
    ("read-address-hex", ("read", TCP, "-a", "12AB"), 1, "--address must be up to 12 decimal digits"),
    ("read-address-long", ("read", TCP, "-a", "1234567890123"), 1, "--address must be up to 12 decimal"),
    ("scan-no-candidates", ("scan", TCP), 1, "pass --candidates ADDR,ADDR,... or, on a one-meter line"),
    ("scan-1997-no-candidates", ("scan", TCP, "-p", "dlt645-1997"), 1, "pass --candidates"),
    ("scan-bad-candidate", ("scan", TCP, "--candidates", "12,AB"), 1, "--candidates: 'AB' is not a meter"),
    (
        "scan-units-zero",
        ("scan", GW, "-p", "modbus", "--units", "0-5"),
        1,
        "--units must be an ascending range",
    ),
    ("scan-units-reversed", ("scan", GW, "-p", "modbus", "--units", "5-1"), 1, "within 1-247, got '5-1'"),
    ("scan-units-300", ("scan", GW, "-p", "modbus", "--units", "1-300"), 1, "within 1-247, got '1-300'"),
    ("scan-units-word", ("scan", GW, "-p", "modbus", "--units", "all"), 1, "--units wants a range like 1-32"),
    ("scan-units-huge", ("scan", GW, "-p", "modbus", "--units", f"1-{BIG}"), 1, "within 1-247"),
    (
        "switch-action",
        ("switch", TCP, "explode", "-a", METER, "--operator", "7", "--dry-run"),
        1,
        "action must be off, on, close-allowed, alarm or alarm-release",
    ),
    (
        "switch-no-password",
        ("switch", TCP, "off", "-a", METER, "--operator", "7", "--dry-run"),
        1,
        "no password configured for meter 000000000001",
    ),
]

FIELD_CASES += [
    (
        "profile-backwards",
        ("profile", TCP, "-a", "1", "--from", "2026-01-02", "--to", "2026-01-01"),
        1,
        "--to 2026-01-01T00:00:00+00:00 must be after --from 2026-01-02T00:00:00+00:00",
    ),
    (
        "sim-port",
        ("sim", "dlt645", "--tcp", "127.0.0.1:99999"),
        2,
        "--tcp wants HOST:PORT with a port 0..65535",
    ),
    (
        "sim-baud-zero",
        ("sim", "dlt645", "--tcp", "127.0.0.1:0", "--baud", "0"),
        2,
        "--baud must be one of 300",
    ),
    ("sim-modbus-baud", ("sim", "modbus", "--model", "eastron_sdm120", "--pty", "--baud", "7"), 2, "got 7"),
    ("sim-no-endpoint", ("sim", "dlt645"), 2, "give exactly one of --tcp HOST:PORT or --pty"),
]

# a relay write names exactly one meter and, without a database, says it goes unrecorded
SWITCH_OFF = ("switch", TCP, "off")
FIELD_CASES += [
    (
        "switch-short-address",
        (*SWITCH_OFF, "-a", "1", "--operator", "7", "--dry-run"),
        1,
        "--address: address '1' must have exactly 12 decimal digits, has 1",
    ),
    (
        "switch-operator-word",
        (*SWITCH_OFF, "-a", METER, "--operator", "op1", "--dry-run"),
        1,
        "operator id 'op1' must be 1-8 digits",
    ),
    (
        "switch-operator-blank",
        (*SWITCH_OFF, "-a", METER, "--operator", " ", "--dry-run"),
        1,
        "an operator id (工号, 1-8 digits) is required",
    ),
    (
        "switch-recorded-no-reason-no-dsn",
        (*SWITCH_OFF, "-a", METER, "--operator", "7"),
        1,
        "--reason is required: it is recorded with the command (--no-record switches without a command",
    ),
    (
        "switch-no-record-with-dsn",
        (*SWITCH_OFF, "-a", METER, "--operator", "7", "--no-record", "--dsn", "postgresql://u@127.0.0.1:9/d"),
        1,
        "--no-record: a database is configured, so the switch is recorded; drop the flag",
    ),
    (
        "switch-recorded-no-reason",
        (*SWITCH_OFF, "-a", METER, "--operator", "7", "--dsn", "postgresql://u@127.0.0.1:9/d"),
        1,
        "--reason is required: it is recorded with the command",
    ),
]

# (case id, arguments, exit code, message); run against the module's database (``--dsn`` appended)
DB_CASES: list[tuple[str, tuple[str, ...], int, str]] = [
    (
        "requests-show-huge",
        ("requests", "show", BIG),
        1,
        f"request id must be 1..9223372036854775807, got {BIG}",
    ),
    ("requests-show-missing", ("requests", "show", "42"), 1, "no meter request 42"),
    (
        "requests-cancel-zero",
        ("requests", "cancel", "0", "--operator", OPERATOR),
        1,
        "request id must be 1..",
    ),
    (
        "requests-list-state",
        ("requests", "list", "--state", "bogus"),
        2,
        "--state: one of requested, running",
    ),
    (
        "meters-read-unknown",
        ("meters", "read", "nobody", "--operator", OPERATOR),
        1,
        "no meter named or addressed",
    ),
    (
        "meters-read-wait",
        ("meters", "read", "Old", "--operator", OPERATOR, "--wait", "-1"),
        2,
        "--wait: between 0",
    ),
    (
        "meters-recollect-backwards",
        ("meters", "recollect", "Old", "--operator", OPERATOR, "--from", "2026-11-02", "--to", "2026-11-01"),
        2,
        "--to '2026-11-01' is not after --from '2026-11-02'",
    ),
    (
        "meters-recollect-date",
        ("meters", "recollect", "Old", "--operator", OPERATOR, "--from", "yesterday", "--to", "2026-11-01"),
        2,
        "--from 'yesterday': expected a date",
    ),
    ("show-id-huge", ("commands", "show", BIG), 1, f"command id must be 1..9223372036854775807, got {BIG}"),
    ("show-id-zero", ("commands", "show", "0"), 1, "command id must be 1..9223372036854775807, got 0"),
    ("show-missing", ("commands", "show", "42"), 1, "no command 42"),
    (
        "cancel-id-huge",
        ("commands", "cancel", BIG, "--operator", OPERATOR, "--reason", "r"),
        1,
        "command id must be 1..",
    ),
    ("approve-id-huge", ("commands", "approve", BIG, "--operator", APPROVER), 1, "command id must be 1.."),
    ("list-state", ("commands", "list", "--state", "bogus"), 1, "--state must be one of pending, sent"),
    ("list-state-case", ("commands", "list", "--state", "PENDING"), 1, "got 'PENDING'"),
    (
        "create-action",
        ("commands", "create", "Old", "explode", "--operator", OPERATOR, "--reason", "r"),
        1,
        "action must be one of",
    ),
    (
        "policy-retention-huge",
        ("db", "policy", "--retention-days", "99999999999", "--operator", ADMIN),
        1,
        "--retention-days must be 0..36500 days, got 99999999999",
    ),
    (
        "policy-retention-negative",
        ("db", "policy", "--retention-days", "-1", "--operator", ADMIN),
        1,
        "--retention-days must be",
    ),
    (
        "policy-compress-huge",
        ("db", "policy", "--compress-after-days", "1000000000000", "--operator", ADMIN),
        1,
        "--compress-after-days must be 0..36500 days",
    ),
    (
        "replace-final-1e400",
        (*REPLACE, "--final", "energy_import_kwh=1e400", "--initial", "energy_import_kwh=0"),
        1,
        "--final energy_import_kwh: '1e400' must be a finite number in 0..1E+12",
    ),
    (
        "replace-final-nan",
        (*REPLACE, "--final", "energy_import_kwh=NaN", "--initial", "energy_import_kwh=0"),
        1,
        "--final energy_import_kwh: 'NaN' must be a finite number",
    ),
    (
        "replace-final-inf",
        (*REPLACE, "--final", "energy_import_kwh=inf", "--initial", "energy_import_kwh=0"),
        1,
        "'inf' must be a finite number",
    ),
    (
        "replace-final-negative",
        (*REPLACE, "--final", "energy_import_kwh=-5", "--initial", "energy_import_kwh=0"),
        1,
        "'-5' must be a finite number in 0..",
    ),
    (
        "replace-final-word",
        (*REPLACE, "--final", "energy_import_kwh=lots", "--initial", "energy_import_kwh=0"),
        1,
        "--final energy_import_kwh: 'lots' is not a number",
    ),
    (
        "replace-final-no-name",
        (*REPLACE, "--final", "=5", "--initial", "energy_import_kwh=0"),
        1,
        "--final '=5': expected QUANTITY=KWH",
    ),
    (
        "replace-final-no-equals",
        (*REPLACE, "--final", "5", "--initial", "energy_import_kwh=0"),
        1,
        "--final '5': expected QUANTITY=KWH",
    ),
    (
        "replace-initial-snan",
        (*REPLACE, "--final", "energy_import_kwh=1", "--initial", "energy_import_kwh=sNaN"),
        1,
        "--initial energy_import_kwh: 'sNaN' must be a finite number",
    ),
    (
        "replace-at-word",
        (
            "billing",
            "replace",
            "Old",
            "New",
            "--operator",
            ADMIN,
            "--at",
            "yesterday",
            "--final",
            "energy_import_kwh=1",
            "--initial",
            "energy_import_kwh=0",
        ),
        1,
        "--at 'yesterday' is not an ISO date-time",
    ),
    (
        "pay-reused-ref",
        ("billing", "pay", "A1", "12.00", "--ref", "R1", "--operator", CASHIER),
        1,
        "reference 'R1' is already recorded as 10.50 to account 'A1'; a different payment needs its own",
    ),
    (
        "pay-reused-ref-other-account",
        ("billing", "pay", "A2", "10.50", "--ref", "R1", "--operator", CASHIER),
        1,
        "reference 'R1' is already recorded as 10.50 to account 'A1'",
    ),
    (
        "pay-unknown-account",
        ("billing", "pay", "A9", "1.00", "--ref", "R9", "--operator", CASHIER),
        1,
        "unknown account 'A9'",
    ),
    (
        "pay-1e400",
        ("billing", "pay", "A1", "1e400", "--ref", "R2", "--operator", CASHIER),
        1,
        "amount '1e400' must",
    ),
    (
        "pay-nan",
        ("billing", "pay", "A1", "NaN", "--ref", "R2", "--operator", CASHIER),
        1,
        "amount 'NaN' must",
    ),
    (
        "pay-negative",
        ("billing", "pay", "A1", " -5", "--ref", "R2", "--operator", CASHIER),
        1,
        "must be positive",
    ),
    ("pay-zero", ("billing", "pay", "A1", "0", "--ref", "R2", "--operator", CASHIER), 1, "must be positive"),
    (
        "pay-fraction",
        ("billing", "pay", "A1", "1.001", "--ref", "R2", "--operator", CASHIER),
        1,
        "two decimals",
    ),
    (
        "pay-word",
        ("billing", "pay", "A1", "ten", "--ref", "R2", "--operator", CASHIER),
        1,
        "'ten' is not a number",
    ),
]


DB_CASES += [
    (
        "bill-due-days",
        (
            "billing",
            "bill",
            "--from",
            "2026-01-01",
            "--to",
            "2026-02-01",
            "--due-days",
            "99999999999",
            "--operator",
            CASHIER,
        ),
        1,
        "--due-days must be 0..36500 days, got 99999999999",
    ),
    (
        "bill-backwards",
        ("billing", "bill", "--from", "2026-02-01", "--to", "2026-01-01", "--operator", CASHIER),
        1,
        "--to 2026-01-01T00:00:00+00:00 must be after --from 2026-02-01T00:00:00+00:00",
    ),
]

DB_CASES += [
    (
        "tariff-price-nan",
        ("tariffs", "add", "T-nan", "--kind", "flat", "--price", "total=NaN", "--operator", ADMIN),
        1,
        "--price total=NaN: price must be a finite",
    ),
    (
        "tariff-price-huge",
        ("tariffs", "add", "T-huge", "--kind", "flat", "--price", "total=1e20", "--operator", ADMIN),
        1,
        "--price total=1e20: price must be",
    ),
    (
        "account-number-empty",
        ("accounts", "add", "", "--kind", "prepaid", "--operator", ADMIN),
        1,
        "account number",
    ),
    (
        "account-credit-limit-negative",
        ("accounts", "add", "A7", "--kind", "prepaid", "--credit-limit", "-5", "--operator", ADMIN),
        1,
        "--credit-limit -5: must be zero or positive",
    ),
    (
        "pay-reference-huge",
        ("billing", "pay", "A1", "1.00", "--ref", "R" * 10_000, "--operator", CASHIER),
        1,
        "--ref: a payment reference has at most",
    ),
    (
        "replace-same-meter",
        (
            "billing",
            "replace",
            "Old",
            "Old",
            "--operator",
            ADMIN,
            "--at",
            AT,
            *("--final", "energy_import_kwh=1", "--initial", "energy_import_kwh=0"),
        ),
        1,
        "meter Old cannot replace itself",
    ),
    (
        "replace-unknown-meter",
        (
            "billing",
            "replace",
            "Old",
            "Nobody",
            "--operator",
            ADMIN,
            "--at",
            AT,
            *("--final", "energy_import_kwh=1", "--initial", "energy_import_kwh=0"),
        ),
        1,
        "Nobody",
    ),
    (
        "replace-unknown-register",
        (*REPLACE, "--final", "bogus_kwh=1", "--initial", "bogus_kwh=0"),
        1,
        "bogus_kwh: not an energy register",
    ),
]

# (case id, arguments, password given, message); sign-in refusals, run against the module's database
PAY = ("billing", "pay", "A1", "1.00", "--ref", "R5")
REASON = ("--reason", "r")
REGISTERS = ("--final", "energy_import_kwh=1", "--initial", "energy_import_kwh=0")
OPERATOR_CASES: list[tuple[str, tuple[str, ...], str, str]] = [
    ("operator-empty", (*PAY, "--operator", ""), PASSWORD, "an operator id (工号, 1-8 digits) is required"),
    (
        "operator-blank",
        (*PAY, "--operator", "   "),
        PASSWORD,
        "an operator id (工号, 1-8 digits) is required",
    ),
    ("operator-word", (*PAY, "--operator", "op1"), PASSWORD, "operator id 'op1' must be 1-8 digits"),
    ("operator-system", (*PAY, "--operator", "system"), PASSWORD, "operator id 'system' must be 1-8 digits"),
    ("operator-nine-digits", (*PAY, "--operator", "123456789"), PASSWORD, "'123456789' must be 1-8 digits"),
    ("operator-negative", (*PAY, "--operator", "-7"), PASSWORD, "operator id '-7' must be 1-8 digits"),
    ("operator-unknown", (*PAY, "--operator", "9999"), PASSWORD, "operator 9999: unknown, disabled or wrong"),
    (
        "operator-wrong-password",
        (*PAY, "--operator", CASHIER),
        "not-the-password",
        f"operator {CASHIER}: unknown, disabled or wrong password",
    ),
    (
        "operator-empty-password",
        (*PAY, "--operator", CASHIER),
        "",
        f"operator {CASHIER}: unknown, disabled or wrong password",
    ),
    (
        "operator-disabled",
        (*PAY, "--operator", DISABLED),
        PASSWORD,
        f"operator {DISABLED}: unknown, disabled or wrong password",
    ),
    (
        "pay-without-cashier",
        (*PAY, "--operator", ADMIN),
        PASSWORD,
        f"operator {ADMIN} does not hold the cashier role (holds admin)",
    ),
    (
        "replace-without-admin",
        (*REPLACE[:4], "--operator", CASHIER, "--at", AT, *REGISTERS),
        PASSWORD,
        f"operator {CASHIER} does not hold the admin role (holds cashier)",
    ),
    (
        "create-without-operator-role",
        ("commands", "create", "Old", "disconnect", "--operator", VIEWER, *REASON),
        PASSWORD,
        f"operator {VIEWER} does not hold the operator role (holds viewer)",
    ),
    (
        "approve-without-approver-role",
        ("commands", "approve", "42", "--operator", OPERATOR),
        PASSWORD,
        f"operator {OPERATOR} does not hold the approver role (holds operator)",
    ),
    (
        "bill-without-cashier",
        ("billing", "bill", "--from", "2026-01-01", "--to", "2026-02-01", "--operator", ADMIN),
        PASSWORD,
        f"operator {ADMIN} does not hold the cashier role (holds admin)",
    ),
    (
        "switch-without-operator-role",
        (*SWITCH_OFF, "-a", METER, "--operator", APPROVER, *REASON),
        PASSWORD,
        f"operator {APPROVER} does not hold the operator role (holds approver)",
    ),
]


@pytest.fixture(scope="module")
def cli_db(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Accounts A1 and A2, payment R1 of 10.50 to A1, meters Old (on A1) and New; one operator per
    role and a disabled one."""
    with module_database(pg_server) as dsn:

        async def seed() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(
                    "INSERT INTO accounts (number, kind) VALUES ('A1', 'prepaid'), ('A2', 'prepaid')"
                )
                roles = ("cashier", "admin", "operator", "approver", "viewer", "cashier")
                ids = (CASHIER, ADMIN, OPERATOR, APPROVER, VIEWER, DISABLED)
                await add_operators(conn, **{f"o{i}": role for i, role in zip(ids, roles, strict=True)})
                await operator_store.set_active(conn, DISABLED, False, "left the company")
            finally:
                await conn.close()

        run_sync(seed)
        inventory = tmp_path_factory.mktemp("cli") / "inv.toml"
        inventory.write_text(INVENTORY)
        imported = headend(
            "inventory", "import", str(inventory), "--operator", ADMIN, "--dsn", dsn, env=operator_env()
        )
        assert imported.code == 0, imported.err
        paid = headend(
            "billing",
            "pay",
            "A1",
            "10.50",
            "--ref",
            "R1",
            "--operator",
            CASHIER,
            "--dsn",
            dsn,
            env=operator_env(),
        )
        assert paid.code == 0, paid.err
        yield dsn


@pytest.fixture(autouse=True)
def no_meter_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HEADEND_METER_PASSWORD",
        "HEADEND_SECRETS_FILE",
        "HEADEND_DSN",
        "HEADEND_CONFIG",
        "HEADEND_STATE_DIR",
        "HEADEND_STORAGE_MODE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("args", "code", "message"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_bad_field_command_is_refused(args: tuple[str, ...], code: int, message: str) -> None:
    assert_refused(headend(*args), code, message)


@pytest.mark.parametrize(("args", "code", "message"), [c[1:] for c in DB_CASES], ids=[c[0] for c in DB_CASES])
def test_bad_database_command_is_refused(cli_db: str, args: tuple[str, ...], code: int, message: str) -> None:
    before = run_sync(lambda: row_counts(cli_db))
    assert_refused(headend(*args, "--dsn", cli_db, env=operator_env()), code, message)
    assert run_sync(lambda: row_counts(cli_db)) == before


@pytest.mark.parametrize(
    ("args", "password", "message"), [c[1:] for c in OPERATOR_CASES], ids=[c[0] for c in OPERATOR_CASES]
)
def test_operator_not_signed_in_is_refused(
    cli_db: str, args: tuple[str, ...], password: str, message: str
) -> None:
    before = run_sync(lambda: row_counts(cli_db))
    outcome = headend(*args, "--dsn", cli_db, env=operator_env(password))
    assert_refused(outcome, 1, message)
    assert not password or password not in outcome.out + outcome.err  # never echoed
    assert run_sync(lambda: row_counts(cli_db)) == before


def test_same_payment_again_is_idempotent(cli_db: str) -> None:
    again = headend(
        "billing",
        "pay",
        "A1",
        "10.50",
        "--ref",
        "R1",
        "--operator",
        CASHIER,
        "--dsn",
        cli_db,
        env=operator_env(),
    )
    assert again.code == 0 and "payment R1 already recorded; balance 10.50" in again.out


def test_payment_file_reusing_a_reference_stores_nothing(cli_db: str, tmp_path: Path) -> None:
    path = tmp_path / "pay.csv"
    path.write_text("account,amount,reference\nA2,4.50,F1\nA1,99.00,R1\n", encoding="utf-8")
    before = run_sync(lambda: row_counts(cli_db))
    outcome = headend(
        "billing", "import", str(path), "--operator", CASHIER, "--dsn", cli_db, env=operator_env()
    )
    assert_refused(outcome, 1, "reference 'R1' is already recorded as 10.50")
    assert run_sync(lambda: row_counts(cli_db)) == before


def test_binary_payment_file_is_refused(cli_db: str, tmp_path: Path) -> None:
    path = tmp_path / "pay.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    outcome = headend(
        "billing", "import", str(path), "--operator", CASHIER, "--dsn", cli_db, env=operator_env()
    )
    assert_refused(outcome, 1, f"{path}: not UTF-8 text")


# environment variables: the error names the variable it came from
ENV_CASES: list[tuple[str, dict[str, str], tuple[str, ...], str]] = [
    (
        "dsn-not-postgres",
        {"HEADEND_DSN": "mysql://x"},
        ("commands", "list"),
        "HEADEND_DSN: 'mysql://x' is not a PostgreSQL URL",
    ),
    (
        "dsn-unreachable",
        {"HEADEND_DSN": "postgresql://u@127.0.0.1:9/db"},
        ("commands", "list"),
        "error: database from HEADEND_DSN:",
    ),
    (
        "dsn-server-stopped",  # the socket of a stopped (embedded) server is gone: said in words
        {"HEADEND_DSN": "postgresql://postgres@/headend?host=/nonexistent/headend-pg&port=5432"},
        ("commands", "list"),
        "error: database from HEADEND_DSN: no server is running at its socket (start the embedded one with"
        " `headend db start`)",
    ),
    (
        "dsn-password-redacted",
        {"HEADEND_DSN": "mysql://u:s3cret@h/db"},
        ("billing", "status"),
        "HEADEND_DSN: 'mysql://u:***@h/db' is not a PostgreSQL URL",
    ),
    (
        "secrets-file-missing",
        {"HEADEND_SECRETS_FILE": "/nonexistent/secrets.toml"},
        ("switch", TCP, "off", "-a", METER, "--operator", "7", "--dry-run"),
        "HEADEND_SECRETS_FILE=/nonexistent/secrets.toml: cannot read secrets file",
    ),
    (
        "password-level",
        {"HEADEND_METER_PASSWORD": "123456", "HEADEND_METER_PASSWORD_LEVEL": "high"},
        ("switch", TCP, "off", "-a", METER, "--operator", "7", "--dry-run"),
        "HEADEND_METER_PASSWORD_LEVEL must be a digit 0..9, got 'high'",
    ),
    (
        "password-format",
        {"HEADEND_METER_PASSWORD": "abc"},
        ("switch", TCP, "off", "-a", METER, "--operator", "7", "--dry-run"),
        "HEADEND_METER_PASSWORD / HEADEND_METER_PASSWORD_LEVEL: password must be 6 digits",
    ),
]


ENV_CASES += [
    (
        "state-dir-unusable",
        {"HEADEND_STATE_DIR": "/proc/headend-nope"},
        ("db", "status"),
        "the embedded server cannot use HEADEND_STATE_DIR: No such file or directory (/proc/headend-nope)",
    ),
    (  # switch and clock --sync find the database as every command does: the embedded server here
        "switch-state-dir-unusable",
        {"HEADEND_STATE_DIR": "/proc/headend-nope"},
        (*SWITCH_OFF, "-a", METER, "--operator", "7", "--reason", "tampered"),
        "the embedded server cannot use HEADEND_STATE_DIR: No such file or directory (/proc/headend-nope)",
    ),
    (
        "clock-sync-state-dir-unusable",
        {"HEADEND_STATE_DIR": "/proc/headend-nope"},
        ("clock", TCP, "-a", METER, "--sync", "--operator", "7"),
        "the embedded server cannot use HEADEND_STATE_DIR: No such file or directory (/proc/headend-nope)",
    ),
    (
        "storage-mode",
        {"HEADEND_STORAGE_MODE": "bogus"},
        ("db", "migrate", "--dsn", "postgresql://u@127.0.0.1:9/d"),
        "HEADEND_STORAGE_MODE: storage mode must be one of native, timescale, not 'bogus'",
    ),
]


@pytest.mark.parametrize(
    ("env", "args", "message"), [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES]
)
def test_environment_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outcome = headend(*args)
    assert_refused(outcome, 1, message)
    assert "s3cret" not in outcome.err


@pytest.mark.parametrize(
    "args",
    [
        ("billing", "pay", "A1", "NaN", "--ref", "R2", "--operator", CASHIER),
        (
            "billing",
            "replace",
            "Old",
            "New",
            "--operator",
            ADMIN,
            "--at",
            "yesterday",
            "--final",
            "x=1",
            "--initial",
            "x=0",
        ),
    ],
    ids=["pay-amount", "replace-at"],
)
def test_bad_input_is_said_before_the_password_is_asked(cli_db: str, args: tuple[str, ...]) -> None:
    """No password in the environment and none typed: the input error comes first, not a prompt."""
    env = {k: v for k, v in os.environ.items() if k != "HEADEND_OPERATOR_PASSWORD"}
    outcome = headend(*args, "--dsn", cli_db, env=env)
    assert outcome.code == 1
    assert "password" not in (outcome.out + outcome.err).lower(), outcome
    assert outcome.err.startswith("error: ") and (
        "amount 'NaN'" in outcome.err or "--at 'yesterday'" in outcome.err
    )
