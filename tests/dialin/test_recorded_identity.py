"""The inventory's meter number (``meter_number``, 04 00 04 02) is the identity a DTU that dials in must
prove, through the real interfaces: ``headend run`` as a process with its listener and the simulated
DTU (readings from a connection nothing verified are stored as suspect, never billed nor acted on;
once the inventory states the numbers they are actual; an impostor is closed and nothing of it is
stored), and ``headend switch`` / ``headend clock --sync`` as processes (the recorded number, not
only a typed one, must answer before any password goes out)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu, impostor_bus
from tests.dialin.test_cli import spawn
from tests.support.cli import cli_env, finish, headend_in_process
from tests.support.daemons import Daemon
from tests.support.operators import add_operators, import_inventory_cli, operator_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)
PASSWORD = "271828"
QUALITY_SQL = (
    "SELECT r.quality::text AS quality, count(*) AS n FROM readings r"
    " JOIN quantities q ON q.id = r.quantity_id WHERE q.name = 'energy_import_kwh' GROUP BY 1"
)


def dtu_inventory(path: Path, bus: SimBus, numbers: list[str] | None = None) -> Path:
    """One DTU channel and its meters (the first on account ID-1, with a relay); ``numbers``: the
    meter numbers the inventory states (none by default)."""
    lines = ['[[channels]]\nname = "dtu-0100"\nurl = "dtu://DTU-0100?baud=2400"\n']
    for index, meter in enumerate(bus.meters):
        entry = (
            f'[[meters]]\nchannel = "dtu-0100"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
            'model = "dlt645-generic"\n'
        )
        if index == 0:
            entry += 'account = "ID-1"\nhas_relay = true\n'
        if numbers is not None:
            entry += f'meter_number = "{numbers[index]}"\n'
        lines.append(entry)
    path.write_text("\n".join(lines))
    return path


async def seed_account(conn: asyncpg.Connection) -> None:
    """A prepaid account with no credit on a flat tariff: billed, it would go into arrears at once."""
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('res', 'flat') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
        " VALUES ($1, 'total', 1, '2000-01-01Z')",
        tariff,
    )
    await conn.execute(
        "INSERT INTO accounts (number, kind, tariff_id) VALUES ('ID-1', 'prepaid', $1)", tariff
    )


def daemon_config(tmp_path: Path, dsn: str, listen_port: int, metrics_port: int) -> Path:
    config = tmp_path / "headend.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "2s"\noffset = "0s"\ninventory_reload = "300ms"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[engine]\nservices = ["headend.billing.service:run", "headend.control.service:run"]\n'
        '[billing]\nrun_every = "500ms"\nidentity_every = "1h"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
        f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nheartbeat = "HB"\n'
    )
    return config


async def test_readings_of_an_unverified_dtu_are_suspect_until_the_inventory_states_the_numbers(
    pg_dsn: str, tmp_path: Path
) -> None:
    listen_port, metrics_port = free_port(), free_port()
    real = SimBus(BusSpec(meters=2, seed=100, transport="carried", password=PASSWORD))
    conn = await asyncpg.connect(pg_dsn)
    await seed_account(conn)
    imported = await asyncio.to_thread(import_inventory_cli, pg_dsn, dtu_inventory(tmp_path / "a.toml", real))
    assert imported.returncode == 0, imported.stderr
    daemon = await Daemon.start(
        daemon_config(tmp_path, pg_dsn, listen_port, metrics_port), tmp_path, metrics_port
    )
    dtu = SimDtu(DtuSpec("DTU-0100", "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.2), real)
    impostor: SimDtu | None = None

    async def qualities() -> dict[str, int]:
        return {r["quality"]: r["n"] for r in await conn.fetch(QUALITY_SQL)}

    try:
        await daemon.wait_logged("engine started")
        await dtu.start()

        # nothing verifies who answers: stored, but as suspect; never validated, billed or acted on
        async def suspect() -> bool:
            return (await qualities()).get("suspect", 0) >= 6

        await wait_until(suspect, 90, "suspect readings from the unverified DTU")
        assert "actual" not in await qualities()
        said = daemon.logged(
            "dial-in connection not verified: no password goes to it, its readings are stored as suspect"
        )
        assert len(said) == 1  # once per connection, with the reason
        assert said[0]["reason"] == (
            "no meter behind DTU DTU-0100 has a recorded meter number (inventory meter_number)"
        )
        assert await daemon.metric("headend_unverified_jobs_total", '{channel="dtu-0100",kind="read"}') >= 6
        assert await daemon.metric("headend_dialin_events", '{event="unverified"}') == 1
        assert await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 0
        assert await conn.fetchval("SELECT count(*) FROM bills") == 0
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0
        assert real.requests[0x1C] == 0

        # the operator states the nameplate numbers: the same connection is checked again, verified
        stated = [m.address for m in real.meters]  # the simulated meters' numbers are their addresses
        imported = await asyncio.to_thread(
            import_inventory_cli, pg_dsn, dtu_inventory(tmp_path / "b.toml", real, stated)
        )
        assert imported.returncode == 0, imported.stderr

        async def actual() -> bool:
            return (await qualities()).get("actual", 0) >= 4

        await wait_until(actual, 60, "actual readings once the inventory states the meter numbers")
        assert dtu.counts["connects"] == 1
        listed = await conn.fetch("SELECT address, meter_number FROM meters ORDER BY address")
        assert [(r["address"], r["meter_number"]) for r in listed] == sorted(zip(stated, stated, strict=True))

        # an impostor with the DTU's id but other meters: closed, nothing of it stored
        await dtu.stop()
        started = datetime.now(UTC)
        impostor = await SimDtu(
            DtuSpec("DTU-0100", "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.2),
            impostor_bus(real, seed=177),
        ).start()

        async def refused() -> bool:
            return await daemon.metric("headend_dialin_events", '{event="identity_mismatch"}') >= 2

        await wait_until(refused, 60, "the impostor closed (twice: it redials)")
        after = await conn.fetchval("SELECT count(*) FROM readings WHERE ts > $1", started)
        assert after == 0
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0
    finally:
        if impostor is not None:
            await impostor.stop()
        await dtu.stop()
        await daemon.close()
        await conn.close()


@pytest.mark.long(seconds=25)
async def test_switch_and_clock_sync_verify_the_number_the_inventory_records(
    pg_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    bus = SimBus(BusSpec(meters=1, seed=101, transport="carried", password=PASSWORD))
    (meter,) = bus.meters
    conn = await asyncpg.connect(pg_dsn)
    await seed_account(conn)
    await add_operators(conn, o1007="operator")
    wrong = "880000000001"  # the inventory says another meter hangs here
    imported = await asyncio.to_thread(
        import_inventory_cli, pg_dsn, dtu_inventory(tmp_path / "a.toml", bus, [wrong])
    )
    assert imported.returncode == 0, imported.stderr
    dtu = await SimDtu(DtuSpec("DTU-0100", "127.0.0.1", port, backoff_s=0.1), bus).start()
    env = cli_env(HEADEND_METER_PASSWORD=PASSWORD) | operator_env()
    listen = ("dtu://DTU-0100", "--listen", f"127.0.0.1:{port}", "--operator", "1007", "--dsn", pg_dsn)
    switch = ("switch", listen[0], "off", *listen[1:], "-a", meter.address, "--reason", "tamper", "--json")
    clock = ("clock", *listen, "-a", meter.address, "--sync")
    try:
        # no --meter-number typed: the recorded one must answer, and does not
        for args in (switch, clock):
            code, out, err = await finish(await spawn(*args, env=env))
            assert (code, out) == (1, ""), err
            said = f"error: dtu://DTU-0100: meter {meter.address} does not answer meter number {wrong}"
            assert err.strip().splitlines()[-1] == said and "Traceback" not in err
        # a typed number cannot overrule the inventory's
        code, _, err = await finish(await spawn(*switch, "--meter-number", meter.address, env=env))
        assert code == 1 and err.strip() == (
            f"error: --meter-number {meter.address} is not the number the inventory records for meter"
            f" dtu-0100/{meter.address} ({wrong}): nothing sent"
        ), err
        assert (bus.requests[0x1C], bus.requests[0x08], bus.requests[0x14]) == (0, 0, 0)  # no password out
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0

        # the inventory corrected: the meter answers its recorded number, the switch goes out
        imported = await asyncio.to_thread(
            import_inventory_cli, pg_dsn, dtu_inventory(tmp_path / "b.toml", bus, [meter.address])
        )
        assert imported.returncode == 0, imported.stderr
        code, out, err = await finish(await spawn(*switch, env=env))
        assert code == 0, err
        assert json.loads(out)["state"] == "confirmed" and meter.model.relay.open
        assert bus.requests[0x1C] == 1
    finally:
        await dtu.stop()
        await conn.close()


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            'meter_number = "12345678901"',
            "the 12 digits of the nameplate, got '12345678901'",
        ),
        (
            'meter_number = "12345678901X"',
            "the 12 digits of the nameplate, got '12345678901X'",
        ),
        ('protocol = "dlt645-1997"\nmeter_number = "123456789012"', "meter_number is the DL/T 645-2007"),
    ],
)
def test_a_bad_meter_number_is_one_line_and_nothing_is_imported(
    pg_dsn: str, tmp_path: Path, line: str, said: str
) -> None:
    inventory = tmp_path / "inv.toml"
    protocol = "" if "protocol" in line else 'protocol = "dlt645-2007"\n'
    inventory.write_text(
        '[[channels]]\nname = "d"\nurl = "dtu://DTU-1"\n[[meters]]\nchannel = "d"\n'
        f'{protocol}address = "1"\nmodel = "dlt645-generic"\n{line}\n'
    )
    result = headend_in_process("inventory", "import", str(inventory), "--operator", "1", "--dsn", pg_dsn)
    assert result.returncode == 2 and result.stdout == ""
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"{inventory}: meters[0]: ") and said in error
