"""Bad inventory files: ``headend inventory import`` refuses each with one line, exit 2, nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.inputs.harness import Outcome, assert_refused, headend, module_database, row_counts
from tests.support.operators import add_operators, operator_env
from tests.support.postgres import PgServer, run_sync

ADMIN = "1"

STORED = (
    '[[channels]]\nname = "existing-bus"\nurl = "tcp://192.0.2.50:8899"\n'
    '[[channels]]\nname = "existing-gw"\nurl = "modbus-tcp://192.0.2.60:502"\n'
    '[[meters]]\nchannel = "existing-bus"\nprotocol = "dlt645-2007"\naddress = "1"\n'
    'model = "dlt645-generic"\n'
)


def channel(url: str, name: str = "a") -> str:
    return f'[[channels]]\nname = "{name}"\nurl = "{url}"\n'


class Raw(str):
    """A TOML literal written as is (a number, a datetime, nan), not as a string."""


def meter(channel: str = "a", protocol: str = "dlt645-2007", **fields: object) -> str:
    """A ``[[meters]]`` table; str values are TOML strings, other values (and :class:`Raw`) literals."""
    fields.setdefault("model", "eastron_sdm120" if protocol == "modbus" else "dlt645-generic")
    if protocol != "modbus":
        fields.setdefault("address", "12345678")
    body = "".join(
        f'{key} = "{value}"\n'
        if isinstance(value, str) and not isinstance(value, Raw)
        else f"{key} = {value}\n"
        for key, value in fields.items()
    )
    return f'[[meters]]\nchannel = "{channel}"\nprotocol = "{protocol}"\n{body}'


TCP = channel("tcp://127.0.0.1:7001")
GW = channel("modbus-tcp://127.0.0.1:502")
LONG = "x" * 100_000

# (case id, file name, content, message the one error line must contain)
CASES: list[tuple[str, str, str | bytes, str]] = [
    ("baud-zero", "i.toml", channel("tcp://h:1?baud=0"), "baud must be one of 300, 600"),
    ("baud-word", "i.toml", channel("tcp://h:1?baud=fast"), "baud must be a whole number, got 'fast'"),
    ("baud-negative", "i.toml", channel("tcp://h:1?baud=-9600"), "baud must be one of"),
    ("baud-odd", "i.toml", channel("serial:///dev/ttyS0?baud=12345"), "got 12345"),
    ("retries-negative", "i.toml", channel("tcp://h:1?retries=-5"), "retries must be 0..10, got -5"),
    ("retries-huge", "i.toml", channel("tcp://h:1?retries=1000"), "retries must be 0..10, got 1000"),
    ("gap-nan", "i.toml", channel("tcp://h:1?gap_ms=nan"), "gap_ms must be 0..10000 ms, got 'nan'"),
    ("gap-inf", "i.toml", channel("tcp://h:1?gap_ms=inf"), "gap_ms must be 0..10000 ms, got 'inf'"),
    ("gap-negative", "i.toml", channel("tcp://h:1?gap_ms=-1"), "gap_ms must be 0..10000 ms"),
    ("turnaround-huge", "i.toml", channel("tcp://h:1?turnaround_ms=1e9"), "turnaround_ms must be 0..60000"),
    ("turnaround-word", "i.toml", channel("tcp://h:1?turnaround_ms=soon"), "turnaround_ms must be a number"),
    ("bytesize-zero", "i.toml", channel("serial:///dev/ttyS0?bytesize=0"), "bytesize must be 5..8, got 0"),
    ("bytesize-nine", "i.toml", channel("serial:///dev/ttyS0?bytesize=9"), "bytesize must be 5..8, got 9"),
    ("stopbits-three", "i.toml", channel("serial:///dev/ttyS0?stopbits=3"), "stopbits must be 1 or 2"),
    ("parity-x", "i.toml", channel("serial:///dev/ttyS0?parity=X"), "parity must be N, E or O"),
    ("unknown-option", "i.toml", channel("tcp://h:1?bogus=1"), "unknown channel options ['bogus']"),
    ("issue-12-url", "i.toml", channel("tcp://h:1?baud=fast&bogus=1"), "baud must be a whole number"),
    ("bad-query", "i.toml", channel("tcp://h:1?baud"), "malformed options"),
    ("scheme-http", "i.toml", channel("http://x:1"), "unsupported channel scheme 'http'"),
    ("tcp-no-port", "i.toml", channel("tcp://host"), "tcp URL needs host and port"),
    ("port-out-of-range", "i.toml", channel("tcp://host:99999"), "bad port"),
    ("serial-no-path", "i.toml", channel("serial://"), "serial URL needs a device path"),
    ("url-control-char", "i.toml", channel("tcp://h:1\\u0007"), "control characters"),
    ("url-too-long", "i.toml", channel("tcp://h:1?" + "x" * 2000), "characters long (at most 1000)"),
    (
        "same-host-port",
        "i.toml",
        channel("tcp://10.0.0.1:8899") + channel("rtu-over-tcp://10.0.0.1:8899", "b"),
        "channel 'b' is the same bus as channel 'a'",
    ),
    (
        "same-device",
        "i.toml",
        channel("serial:///dev/ttyUSB0") + channel("serial:///dev/ttyUSB0?baud=9600", "b"),
        "is the same bus as channel 'a'",
    ),
    (
        "same-dtu-id",  # a dtu:// bus is the device it sits behind: its registration id
        "i.toml",
        channel("dtu://DTU-0001") + channel("dtu://DTU-0001?baud=9600", "b"),
        "channel 'b' is the same bus as channel 'a'",
    ),
    ("dtu-no-id", "i.toml", channel("dtu://"), "dtu URL needs the registration id"),
    (
        "same-bus-as-stored",
        "i.toml",
        channel("tcp://192.0.2.50:8899", "new-name"),
        "channel 'new-name' is the same bus as channel 'existing-bus'",
    ),
    ("channel-name-100k", "i.toml", channel("tcp://h:1", LONG), "characters long (at most 200)"),
    ("channel-name-space", "i.toml", channel("tcp://h:1", "a b"), "letters, digits and _ . : - only"),
    (
        "dlt645-on-modbus-tcp",
        "i.toml",
        GW + meter(),
        "protocol dlt645-2007 cannot run on a modbus-tcp:// channel",
    ),
    (
        "dlt1997-on-rtu-over-tcp",
        "i.toml",
        channel("rtu-over-tcp://h:4001") + meter(protocol="dlt645-1997"),
        "protocol dlt645-1997 cannot run on a rtu-over-tcp:// channel",
    ),
    (
        "dlt645-on-stored-gateway",
        "i.toml",
        meter("existing-gw"),
        "protocol dlt645-2007 cannot run on a modbus-tcp:// channel",
    ),
    ("unknown-model", "i.toml", TCP + meter(model="m"), "unknown meter model 'm'"),
    ("model-path", "i.toml", TCP + meter(model="/etc/passwd"), "unknown meter model '/etc/passwd'"),
    ("modbus-model-on-dlt645", "i.toml", TCP + meter(model="eastron_sdm120"), "is a modbus model"),
    (
        "dlt645-model-on-modbus",
        "i.toml",
        GW + meter(protocol="modbus", unit_id=1, model="dlt645-generic"),
        "is a dlt645 model",
    ),
    (
        "broadcast-with-relay",
        "i.toml",
        TCP + meter(address="999999999999", has_relay=Raw("true")),
        "'999999999999' is the DL/T 645 broadcast address",
    ),
    (
        "wildcard-address",
        "i.toml",
        TCP + meter(address="AAAAAAAAAAAA", has_relay=Raw("true")),
        "is the DL/T 645 wildcard address",
    ),
    ("non-bcd-address", "i.toml", TCP + meter(address="12AB"), "up to 12 decimal digits, got '12AB'"),
    ("address-13-digits", "i.toml", TCP + meter(address="1234567890123"), "up to 12 decimal digits"),
    (
        "unit-zero",
        "i.toml",
        GW + meter(protocol="modbus", unit_id=0),
        "unit id must be 1..247 (0 is broadcast), got 0",
    ),
    ("unit-248", "i.toml", GW + meter(protocol="modbus", unit_id=248), "unit id must be 1..247"),
    ("unit-negative", "i.toml", GW + meter(protocol="modbus", unit_id=-1), "unit id must be 1..247"),
    ("unit-as-address", "i.toml", GW + meter(protocol="modbus", address="300"), "got 300"),
    ("modbus-no-unit", "i.toml", GW + meter(protocol="modbus"), "a Modbus meter needs unit_id (1..247)"),
    ("unit-on-dlt645", "i.toml", TCP + meter(unit_id=3), "unit_id is for Modbus meters only"),
    (
        "installed-far-future",
        "i.toml",
        TCP + meter(installed_at=Raw("9999-12-31T00:00:00Z")),
        "is in the future",
    ),
    ("installed-naive", "i.toml", TCP + meter(installed_at=Raw("2026-01-01T00:00:00")), "needs a UTC offset"),
    ("meter-name-100k", "i.toml", TCP + meter(name=LONG), "characters long (at most 200)"),
    ("meter-name-control", "i.toml", TCP + meter(name="bell\\u0007"), "contains control characters"),
    (
        "multiplier-1e308",
        "i.toml",
        TCP + meter(multiplier=Raw("1e308")),
        "multiplier: must be a finite number",
    ),
    ("multiplier-nan", "i.toml", TCP + meter(multiplier=Raw("nan")), "multiplier: must be a finite number"),
    ("multiplier-inf", "i.toml", TCP + meter(multiplier=Raw("inf")), "multiplier: must be a finite number"),
    ("multiplier-zero", "i.toml", TCP + meter(multiplier=0), "multiplier: must be a finite number above 0"),
    ("multiplier-negative", "i.toml", TCP + meter(multiplier=-1), "multiplier: must be a finite number"),
    ("reason-not-protected", "i.toml", TCP + meter(protected_reason="x"), "protected_reason given but"),
    ("meter-unknown-field", "i.toml", TCP + meter(baud="2400"), "baud: unknown field"),
    ("duplicate-meter", "i.toml", TCP + meter() + meter(), "meters[1]: address: duplicate of meters[0]"),
    ("unknown-channel", "i.toml", meter("zz"), "channel: no channel named 'zz'"),
    ("unknown-account", "i.toml", TCP + meter(account="A-9"), "account: no account numbered 'A-9'"),
    ("unknown-protocol", "i.toml", TCP + meter(protocol="iec62056"), "protocol: Input should be"),
    ("binary-csv", "i.csv", bytes(range(256)) * 4, "binary file (NUL bytes), expected UTF-8 text"),
    ("latin1-csv", "i.csv", "channel,model\nb\xfcs,m\n".encode("latin-1"), "not UTF-8 text"),
    ("binary-toml", "i.toml", b"\x89PNG\r\n\x1a\n\x00\x00", "binary file (NUL bytes)"),
    ("csv-no-channel-column", "i.csv", "name,model\nx,m\n", "header must name at least channel"),
    ("csv-extra-fields", "i.csv", "channel,model\na,dlt645-generic,surplus\n", "more fields than the header"),
    (
        "csv-unknown-model",
        "i.csv",
        "channel,channel_url,protocol,address,model\na,tcp://h:1,dlt645-2007,1,m\n",
        "line 2: model: unknown meter model 'm'",
    ),
    (
        "csv-multiplier-word",
        "i.csv",
        "channel,channel_url,protocol,address,model,multiplier\na,tcp://h:1,dlt645-2007,1,dlt645-generic,big\n",
        "line 2: multiplier: Input should be a valid number",
    ),
    (
        "csv-bad-url",
        "i.csv",
        "channel,channel_url,protocol,address,model\na,tcp://h:1?baud=0,dlt645-2007,1,dlt645-generic\n",
        "line 2: url: baud must be one of",
    ),
    ("toml-broken", "i.toml", "[[channels]\n", "not valid TOML"),
    ("toml-unknown-table", "i.toml", "[[sensors]]\nname = 1\n", "sensors: unknown table"),
    ("toml-channels-not-array", "i.toml", 'channels = "x"\n', "channels: must be an array of tables"),
    ("unknown-format", "i.txt", "x", "unknown format (use .toml or .csv)"),
    ("has-relay-word", "i.toml", TCP + meter(has_relay="yes"), "has_relay: Input should be a valid boolean"),
    ("empty-toml", "i.toml", "", "no channels and no meters"),
    ("empty-csv", "i.csv", "", "line 1: header must name at least channel"),
    ("header-only-csv", "i.csv", "channel,channel_url,protocol,address,model\n", "no channels and no meters"),
    ("blank-toml", "i.toml", "# nothing here\n\n", "no channels and no meters"),
]


def import_file(path: Path, dsn: str) -> Outcome:
    """``headend inventory import PATH`` signed in as the module's admin."""
    return headend("inventory", "import", str(path), "--operator", ADMIN, "--dsn", dsn, env=operator_env())


@pytest.fixture(scope="module")
def inventory_db(pg_server: PgServer) -> Iterator[str]:
    """A database with an admin operator (later holding a stored DL/T 645 bus and a Modbus gateway)."""
    with module_database(pg_server) as dsn:

        async def seed() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await add_operators(conn, **{f"o{ADMIN}": "admin"})
            finally:
                await conn.close()

        run_sync(seed)
        yield dsn


@pytest.fixture(scope="module")
def seeded(inventory_db: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("seed") / "stored.toml"
    path.write_text(STORED)
    done = import_file(path, inventory_db)
    assert done.code == 0, done.err
    return inventory_db


@pytest.mark.parametrize(("name", "content", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_inventory_is_refused(
    seeded: str, tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    before = run_sync(lambda: row_counts(seeded))
    outcome = import_file(path, seeded)
    assert_refused(outcome, 2, message)
    assert run_sync(lambda: row_counts(seeded)) == before


def test_missing_file_is_refused(seeded: str, tmp_path: Path) -> None:
    assert_refused(import_file(tmp_path / "nope.toml", seeded), 2, "no such file")


def test_a_good_file_still_imports(seeded: str, tmp_path: Path) -> None:
    """The checks refuse the bad, not the good: every scheme, Modbus RTU on a serial line, line settings."""
    path = tmp_path / "good.toml"
    path.write_text(
        channel("serial:///dev/ttyUSB7?baud=9600&parity=N&bytesize=8&stopbits=2&gap_ms=20&retries=3", "s")
        + channel("rtu-over-tcp://192.0.2.70:4001", "r")
        + meter("s", "modbus", unit_id=247)
        + meter("r", "modbus", unit_id=1, multiplier=40.0, installed_at=Raw("2026-01-01T00:00:00Z"))
    )
    before = run_sync(lambda: row_counts(seeded))
    outcome = import_file(path, seeded)
    assert outcome.code == 0, outcome.err
    after = run_sync(lambda: row_counts(seeded))
    assert (after["channels"], after["meters"]) == (before["channels"] + 2, before["meters"] + 2)
