"""The field commands and ``headend concentrator archive`` as processes against simulated concentrators."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.inventory import import_inventory, read_inventory
from headend.transport.concentrator import ConcentratorLink
from headend.transport.url import parse_channel_url
from protocols.gdw1376 import Afn, ArchiveRecord, CurveRequest, DailyReading, unit
from simulators.bus import DEFAULT_PASSWORD
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS, inventory_toml, listening, url_of
from tests.support.cli import CliResult, cli_env, headend_async, spawn
from tests.support.operators import add_operators, operator_env
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)

PW = bytes(range(16))


async def headend(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """The CLI as a process while this event loop keeps serving the simulated concentrator."""
    return await headend_async(*args, env=cli_env(HEADEND_METER_PASSWORD=DEFAULT_PASSWORD) | (env or {}))


def secrets_file(tmp_path: Path, pw: bytes = PW) -> Path:
    path = tmp_path / "secrets.toml"
    path.write_text(f'[concentrators."{ADDRESS}"]\npw = "{pw.hex()}"\n')
    return path


async def test_read_native_energy_and_forwarded_items_from_a_fixed_address_concentrator() -> None:
    async with listening(meters=4) as sim:
        record = sim.pool.archive[3]
        code, out, err = await headend(
            "read", url_of(sim), "-a", record.address, "--port", str(record.port), "--pn", "3",
            "energy_import_kwh", "voltage_a_v", "04000503", "--json",
        )  # fmt: skip
    assert code == 0, err
    values = json.loads(out)["values"]
    assert values["energy_import_kwh"] == pytest.approx(sim.pool.collected[record.address].total)
    assert 200 < values["voltage_a_v"] < 260 and values["04000503"]["relay_open"] is False
    # energy from F129 and the voltage from F25 (two AFN 0C requests); only the DI is forwarded
    assert sim.counts["afn_0C"] == 2 and sim.counts["forwards"] == 1


async def test_live_power_voltage_and_current_come_from_one_f25_record_not_forwarded() -> None:
    async with listening(meters=2, three_phase=1) as sim:
        record = sim.pool.archive[1]  # meter #0: three-phase
        model = sim.pool.meters[0].model
        code, out, err = await headend(
            "read", url_of(sim), "-a", record.address, "--port", str(record.port), "--pn", "1",
            "power_kw", "power_b_kw", "reactive_power_kvar", "pf", "pf_c", "voltage_a_v", "voltage_c_v",
            "current_a_a", "current_b_a", "--json",
        )  # fmt: skip
        single = sim.pool.archive[2]  # meter #1: single-phase
        code_1, out_1, err_1 = await headend(
            "read", url_of(sim), "-a", single.address, "--port", str(single.port), "--pn", "2",
            "voltage_a_v", "voltage_b_v", "--json",
        )  # fmt: skip
    assert code == 0, err
    assert code_1 == 0, err_1
    # a fresh record's EE phase is what the meter does not measure: said so, not forwarded
    assert 200 < json.loads(out_1)["values"]["voltage_a_v"] < 260
    assert json.loads(out_1)["unsupported"] == {
        "voltage_b_v": "not measured by the meter (EE in the concentrator's AFN 0C F25)"
    }
    values = json.loads(out)["values"]
    assert sim.pool.meters[0].address == record.address and model.phases == 3
    assert values["pf"] == values["pf_c"] == pytest.approx(model.pf, abs=1e-3)  # F25's % as a fraction
    assert all(200 < values[q] < 260 for q in ("voltage_a_v", "voltage_c_v"))
    # the phase power is a third of the total, the reactive power follows the power factor
    assert values["power_b_kw"] == pytest.approx(values["power_kw"] / 3, abs=1e-3)
    tan_phi = (1 / model.pf**2 - 1) ** 0.5
    assert values["reactive_power_kvar"] == pytest.approx(values["power_kw"] * tan_phi, abs=2e-3)
    assert values["current_a_a"] > 0 and values["current_b_a"] > 0
    # AFN 0C F25 answered all (`headend read` asks one quantity at a time: 9 + 2 F25 requests, where
    # the engine asks one per cycle); nothing went to a meter through AFN 10
    assert sim.counts["afn_0C"] == 11 and sim.counts["forwards"] == 0


async def test_read_a_dial_in_concentrator_through_listen() -> None:
    port = free_port()
    spec = ConcentratorSpec(port=port, address=ADDRESS, meters=2, latency_ms=20, redial_s=0.2)
    async with SimConcentrator(spec) as sim:
        record = sim.pool.archive[2]
        code, out, err = await headend(
            "read", f"gdw1376://{ADDRESS}", "--listen", f"127.0.0.1:{port}", "--wait", "30",
            "-a", record.address, "--port", str(record.port), "energy_import_kwh", "--json",
        )  # fmt: skip
    assert code == 0, err
    meter = next(m for m in sim.pool.meters if m.address == record.address)
    register = meter.model.registers.import_kwh
    assert register - 1 <= json.loads(out)["values"]["energy_import_kwh"] <= register + 0.01  # forwarded
    assert sim.counts["logins"] >= 1 and sim.counts["forwards"] == 1


async def test_a_dial_in_channel_without_listen_is_one_line_error() -> None:
    code, out, err = await headend("read", f"gdw1376://{ADDRESS}", "-a", "1", "--port", "1")
    assert code == 1 and out == ""
    assert err.strip() == f"error: gdw1376://{ADDRESS} dials in: give --listen HOST:PORT to wait for it"


async def test_switch_is_forwarded_with_the_pw_from_the_secrets_file_and_confirmed_by_read_back(
    tmp_path: Path,
) -> None:
    async with listening(meters=2, pw=PW) as sim:
        record = sim.pool.archive[1]
        meter = next(m for m in sim.pool.meters if m.address == record.address)
        args = [
            "switch",
            url_of(sim),
            "off",
            "-a",
            record.address,
            "--port",
            str(record.port),
            "--operator",
            "42",
            "--no-record",  # no database here: the recorded switch is tested with one below
        ]
        code, out, err = await headend(*args, "--json")  # no PW: the concentrator refuses to forward
        assert code == 1 and meter.model.relay.open is False and out == ""
        assert err.strip() == "error: meter refused: forwarding refused by the concentrator (AFN 10 denied)"
        code, out, err = await headend(*args, "--secrets", str(secrets_file(tmp_path)), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "confirmed" and result["state"]["open"] is True
    assert meter.model.relay.open is True
    assert result["evidence"]["event_record"]["operator"] == "00000042"
    assert PW.hex() not in out + err and PW.hex().upper() not in out + err


async def test_recorded_switch_through_a_concentrator_is_signed_in_gated_and_confirmed(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with listening(meters=2, pw=PW) as sim:
        record = sim.pool.archive[2]
        meter = next(m for m in sim.pool.meters if m.address == record.address)
        inventory = inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)
        inventory.write_text(
            inventory.read_text().replace(
                'model = "dlt645-generic"', 'model = "dlt645-generic"\nhas_relay = true'
            )
        )
        conn = await asyncpg.connect(pg_dsn)
        try:
            await import_inventory(conn, read_inventory(inventory))
            await add_operators(conn, o1007="operator", o1008="viewer")
            args = [
                "switch", url_of(sim), "off", "-a", record.address, "--port", str(record.port),
                "--secrets", str(secrets_file(tmp_path)), "--dsn", pg_dsn, "--reason", "tampered",
            ]  # fmt: skip
            code, _out, err = await headend(*args, "--operator", "1008", env=operator_env())
            assert code == 1 and "does not hold the operator role" in err
            assert (
                meter.model.relay.open is False and await conn.fetchval("SELECT count(*) FROM commands") == 0
            )
            code, out, err = await headend(*args, "--operator", "1007", env=operator_env())
            assert code == 0, err
            assert meter.model.relay.open is True
            row = await conn.fetchrow("SELECT cause, operator, state::text AS state FROM commands")
            assert (row["cause"], row["operator"], row["state"]) == ("field", "1007", "confirmed")
            assert PW.hex() not in out + err
        finally:
            await conn.close()


async def test_clock_of_the_concentrator_is_read_and_set_and_a_meter_clock_is_read_through_it(
    tmp_path: Path,
) -> None:
    async with listening(meters=2, pw=PW) as sim:
        code, out, err = await headend("clock", url_of(sim), "--json")
        assert code == 0, err
        assert abs(json.loads(out)["drift_s"]) < 5
        sim.clock.set_local(sim.clock.local() + timedelta(minutes=10))
        config = tmp_path / "headend.toml"  # the daemon's clock policy, with guards of a second
        config.write_text('[clock]\nboundary_guard = "1s"\nmidnight_guard = "1s"\n')
        code, out, err = await headend(
            "clock",
            url_of(sim),
            "--sync",
            "--config",
            str(config),
            "--secrets",
            str(secrets_file(tmp_path)),
            "--json",
            "--operator",
            "1001",
            "--no-record",
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["action"] == "write" and 590 < result["drift_s"] < 610
        assert abs(result["drift_after_s"]) < 5 and abs(sim.clock.offset.total_seconds()) < 5
        record = sim.pool.archive[2]
        code, out, err = await headend(
            "clock", url_of(sim), "-a", record.address, "--port", str(record.port),
            "--secrets", str(secrets_file(tmp_path)), "--json",
        )  # fmt: skip
    assert code == 0, err
    assert abs(json.loads(out)["drift_s"]) < 5 and sim.counts["forwards"] >= 2


async def test_archive_diff_then_push_assigns_inventory_pns_and_confirms(pg_dsn: str, tmp_path: Path) -> None:
    async with listening(meters=4, faults="absent=#2", pw=PW) as sim:
        sim.pool.archive[9] = ArchiveRecord(
            serial=9, pn=9, port=1, address="000000009999"
        )  # not in the inventory
        moved = sim.pool.archive[4]
        sim.pool.archive[4] = replace(moved, port=3 - moved.port)  # on the other port than the inventory says
        conn = await asyncpg.connect(pg_dsn)
        await import_inventory(conn, read_inventory(inventory_toml(tmp_path / "inv.toml", url_of(sim), sim)))
        await conn.close()
        code, out, err = await headend("concentrator", "archive", "diff", "conc-1", "--dsn", pg_dsn, "--json")
        assert code == 1, err
        diff = json.loads(out)
        assert [r["pn"] for r in diff["missing"]] == [3] and [r["pn"] for r in diff["extra"]] == [9]
        assert [d["wanted"]["pn"] for d in diff["different"]] == [4] and diff["matching"] == 2
        asked = ("concentrator", "archive", "push", "conc-1", "--dsn", pg_dsn)
        push = (*asked, "--yes")
        secrets = ("--secrets", str(secrets_file(tmp_path)), "--json")
        conn = await asyncpg.connect(pg_dsn)
        await add_operators(conn, o31="operator", o32="viewer,approver")
        await conn.close()
        untouched = dict(sim.pool.archive)
        for operator, password, message in (
            ("32", None, "operator 32 does not hold the operator role (holds viewer, approver)"),
            ("31", "not-the-password", "operator 31: unknown, disabled or wrong password"),
            ("", None, "an operator id (工号, 1-8 digits) is required"),
        ):
            code, out, err = await headend(
                *push, *secrets, "--operator", operator, env=operator_env(*(password,) if password else ())
            )
            assert code == 1 and err.strip() == f"error: {message}", err
        assert sim.pool.archive == untouched  # refused before the concentrator is touched
        # no terminal to ask on and no --yes: refused; --dry-run shows what would be written and deleted
        code, out, err = await headend(*asked, *secrets, "--operator", "31", env=operator_env())
        assert code == 1 and err.strip() == (
            "error: archive push rewrites the concentrator's archive:"
            " give --yes (see it first with --dry-run)"
        )
        code, out, err = await headend(*asked, *secrets, "--operator", "31", "--dry-run")
        assert code == 1 and json.loads(out)["plan"] == (
            "the push writes 2 record(s) and deletes 1: pn 9 (000000009999)"
        ), err
        assert sim.pool.archive == untouched
        code, out, err = await headend(*push, *secrets, "--operator", "31", env=operator_env())
        assert code == 0, err
        pushed = json.loads(out)
        assert pushed["pushed"] == 3 and pushed["agrees"] is True and pushed["after"]["matching"] == 4
        archive = {r.pn: (r.address, r.port) for r in sim.pool.archive.values()}
    wanted = {i + 1: (m.address, sim.pool.port_of[m.address]) for i, m in enumerate(sim.pool.meters)}
    assert archive == wanted
    conn = await asyncpg.connect(pg_dsn)
    try:
        audited = await conn.fetch(
            "SELECT actor, entity_id, details FROM audit_log WHERE action = 'concentrator.archive_pushed'"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["entity_id"]) for r in audited] == [("31", "conc-1")]
    assert json.loads(audited[0]["details"])["pushed"] == 3


async def test_archive_command_errors_are_one_line(pg_dsn: str) -> None:
    code, _out, err = await headend("concentrator", "archive", "diff", "nope", "--dsn", pg_dsn)
    assert code == 2 and err.strip() == "error: no channel named 'nope'"


async def test_sim_concentrator_listen_serves_a_master_that_connects() -> None:
    port = free_port()
    process = await spawn(
        "sim", "concentrator", "--listen", f"127.0.0.1:{port}",
        "--meters", "3", "--latency-ms", "0", "--json",
        stderr=None,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        described = json.loads(await asyncio.wait_for(process.stdout.readline(), 60))
        assert described["listen"] == f"127.0.0.1:{port}" and len(described["meters"]) == 3
        code, out, err = await headend("clock", f"gdw1376+tcp://127.0.0.1:{port}?address={ADDRESS}", "--json")
        assert code == 0, err
        assert abs(json.loads(out)["drift_s"]) < 5
    finally:
        process.terminate()
        await process.wait()
    code, _out, err = await headend("sim", "concentrator", "--meters", "1")
    assert code == 2 and "give exactly one of --connect HOST:PORT or --listen HOST:PORT" in err


@pytest.mark.timeout(120)
async def test_sim_concentrator_history_days_bounds_the_curves_not_the_daily_freezes() -> None:
    """``--history-days 1``: a curve of three days ago is all EE, while its daily freeze is there."""
    port = free_port()
    process = await spawn(
        "sim", "concentrator", "--listen", f"127.0.0.1:{port}",
        "--meters", "1", "--latency-ms", "0", "--history-days", "1", "--json",
        stderr=None,
    )  # fmt: skip
    assert process.stdout is not None
    link = ConcentratorLink(parse_channel_url(f"gdw1376+tcp://127.0.0.1:{port}?address={ADDRESS}"))
    try:
        await asyncio.wait_for(process.stdout.readline(), 60)
        local = (datetime.now(UTC) + timedelta(hours=8)).replace(tzinfo=None, second=0, microsecond=0)
        recent = local.replace(minute=local.minute - local.minute % 15) - timedelta(hours=2)
        today = local.date()
        curves = {}
        for days_ago in (3, 0):
            start = recent - timedelta(days=days_ago)
            items = await link.values(Afn.CLASS2_DATA, [unit(1, 101, CurveRequest(start, 1, 4))])
            curves[days_ago] = items[0][2].values  # type: ignore[attr-defined]
        items = await link.values(Afn.CLASS2_DATA, [unit(1, 161, today - timedelta(days=3))])
    finally:
        await link.close()
        process.terminate()
        await process.wait()
    assert curves[3] == (None,) * 4 and all(v is not None for v in curves[0])
    daily = items[0][2]
    assert isinstance(daily, DailyReading) and daily.reading.total is not None
