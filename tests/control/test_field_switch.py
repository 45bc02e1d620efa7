"""`headend switch` with a database: a persisted command under the safety gates, run by the signed-in
operator on the field channel, confirmed by read-back and audited (real process, bus and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from headend.inventory import import_inventory, read_inventory
from headend.store.embedded import THROWAWAY_SETTINGS, EmbeddedPostgres
from simulators import BusSpec, start_bus
from tests.support.cli import CliResult, headend_async
from tests.support.operators import add_operators, operator_env

METER_PASSWORD = "271828"


async def headend(*args: str, password: str | None = None) -> CliResult:
    """The CLI as a process while this loop serves the simulated bus."""
    env = operator_env(password) if password else operator_env()
    env["HEADEND_METER_PASSWORD"] = METER_PASSWORD
    return await headend_async(*args, env=env)


@pytest.mark.long(seconds=25)
async def test_field_switch_is_recorded_gated_and_audited(pg_dsn: str, tmp_path: Path) -> None:
    async with await start_bus(BusSpec(meters=2, seed=84, password=METER_PASSWORD)) as bus:
        served, protected = bus.meters
        inventory = tmp_path / "inv.toml"
        inventory.write_text(
            f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
            f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{served.address}"\n'
            'model = "dlt645-generic"\nname = "flat-3"\nhas_relay = true\n\n'
            f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{protected.address}"\n'
            'model = "dlt645-generic"\nhas_relay = true\nprotected = true\nprotected_reason = "oxygen"\n'
        )
        conn = await asyncpg.connect(pg_dsn)
        try:
            await import_inventory(conn, read_inventory(inventory))
            await add_operators(conn, o1007="operator", o1008="viewer")
            switch = ("switch", bus.url, "off", "--dsn", pg_dsn, "--reason", "meter tampered")

            code, _, err = await headend(*switch, "-a", protected.address, "--operator", "1007")
            assert code == 1 and "is protected (oxygen)" in err
            code, _, err = await headend(*switch, "-a", served.address, "--operator", "1008")
            assert code == 1 and "does not hold the operator role" in err
            code, _, err = await headend(*switch, "-a", served.address, "--operator", "1007", password="nope")
            assert code == 1 and "wrong password" in err
            code, _, err = await headend(*switch, "-a", served.address, "--operator", "1007", "--no-record")
            assert code == 1 and "a database is configured" in err
            code, _, err = await headend(*switch, "-a", "AAAAAAAAAAAA", "--operator", "1007")
            assert code == 1 and "wildcard" in err
            assert bus.requests[0x1C] == 0 and await conn.fetchval("SELECT count(*) FROM commands") == 0

            code, out, err = await headend(*switch, "-a", served.address, "--operator", "1007", "--json")
            assert code == 0, err
            printed = json.loads(out)  # --json with a database is JSON too
            assert printed["state"] == "confirmed" and printed["evidence"]["state"]["open"] is True
            assert served.model.relay.open and not protected.model.relay.open and bus.requests[0x1C] == 1
            row = await conn.fetchrow(
                "SELECT id, cause, operator, state::text AS state, evidence::text AS evidence FROM commands"
            )
            assert (row["cause"], row["operator"], row["state"]) == ("field", "1007", "confirmed")
            assert printed["command"] == row["id"]
            evidence = json.loads(row["evidence"])
            assert evidence["state"]["open"] is True
            assert evidence["evidence"]["event_record"]["operator"] == "00001007"
            trail = await conn.fetch(
                "SELECT actor, action FROM audit_log WHERE entity = 'command' AND entity_id = $1 ORDER BY id",
                str(row["id"]),
            )
            assert [tuple(t) for t in trail] == [
                ("1007", "command.pending"),
                ("1007", "command.requested"),
                ("1007", "command.sent"),
                ("1007", "command.confirmed"),
            ]
            assert METER_PASSWORD not in out + err

            # the pre-trip alarm the same way: recorded, confirmed by status word 3 bit 7
            warn = ("switch", bus.url, "alarm", "--dsn", pg_dsn, "--reason", "warned on site")
            code, out, err = await headend(*warn, "-a", served.address, "--operator", "1007", "--json")
            assert code == 0, err
            assert json.loads(out)["evidence"]["state"]["pre_trip_alarm"] is True and served.model.relay.alarm
            quiet = ("switch", bus.url, "alarm-release", "--dsn", pg_dsn, "--reason", "paid on site")
            code, out, err = await headend(*quiet, "-a", served.address, "--operator", "1007", "--json")
            assert code == 0, err
            assert not served.model.relay.alarm and dict(served.control_actions) == {
                "trip": 1,
                "alarm": 1,
                "alarm_release": 1,
            }
            kinds = await conn.fetch("SELECT action, cause, state::text FROM commands ORDER BY id")
            assert [tuple(k) for k in kinds] == [
                ("disconnect", "field", "confirmed"),
                ("alarm", "field", "confirmed"),
                ("alarm_release", "field", "confirmed"),
            ]
        finally:
            await conn.close()


async def test_a_field_clock_write_names_a_signed_in_operator_and_is_audited(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with await start_bus(
        BusSpec(meters=1, seed=86, password=METER_PASSWORD, clock_offsets_s={0: 150.0})
    ) as bus:
        meter = bus.meters[0]
        conn = await asyncpg.connect(pg_dsn)
        try:
            await add_operators(conn, o1007="operator", o1008="viewer")
            config = tmp_path / "headend.toml"  # the daemon's clock policy, with guards of a second
            config.write_text('[clock]\nboundary_guard = "1s"\nmidnight_guard = "1s"\n')
            sync = ("clock", bus.url, "-a", meter.address, "--sync", "--json", "--config", str(config))
            bad = tmp_path / "bad.toml"
            bad.write_text("[clock\n")

            refusals = {
                (): "--operator is required",
                ("--operator", "1007", "--dsn", pg_dsn, "--no-record"): "a database is configured",
                ("--operator", "1008", "--dsn", pg_dsn): "does not hold the operator role",
                ("--operator", "ops", "--dsn", pg_dsn): "must be 1-8 digits",
                ("--operator", "1007", "--dsn", pg_dsn, "--config", str(bad)): "not valid TOML",
            }
            for extra, why in refusals.items():
                code, out, err = await headend(*sync, *extra)
                assert code == 1 and why in err and out == "" and "Traceback" not in err, (extra, err)
            code, _, err = await headend(*sync, "--operator", "1007", "--dsn", pg_dsn, password="nope")
            assert code == 1 and "wrong password" in err
            # nothing reached the meter: neither a broadcast nor an addressed write
            assert bus.requests[0x08] == 0 and bus.requests[0x14] == 0
            assert abs(meter.model.clock.error().total_seconds() - 150.0) < 2

            code, out, err = await headend(*sync, "--operator", "1007", "--dsn", pg_dsn)
            assert code == 0, err
            result = json.loads(out)
            assert result["action"] != "none" and abs(result["drift_after_s"]) < 5
            assert abs(meter.model.clock.error().total_seconds()) < 5
            rows = await conn.fetch(
                "SELECT actor, action, entity_id, details::text AS details FROM audit_log"
                " WHERE action = 'clock_set'"
            )
            assert [(r["actor"], r["entity_id"]) for r in rows] == [("1007", meter.address)]
            assert 140 < json.loads(rows[0]["details"])["drift_s"] < 160
        finally:
            await conn.close()


async def test_switch_and_clock_sync_without_a_dsn_use_the_embedded_server() -> None:
    """No --dsn and no $HEADEND_DSN: like every database command, switch and clock --sync record into
    the embedded server of $HEADEND_STATE_DIR (started here first with fast, throwaway settings)."""
    state = Path(tempfile.mkdtemp(prefix="headend-emb-"))
    state.chmod(0o755)  # the unprivileged server user traverses it
    embedded = EmbeddedPostgres(state / "postgres", settings=THROWAWAY_SETTINGS)
    env = operator_env() | {"HEADEND_STATE_DIR": str(state), "HEADEND_METER_PASSWORD": METER_PASSWORD}
    env.pop("HEADEND_DSN", None)
    try:
        dsn = embedded.start()
        code, _, err = await headend_async("db", "migrate", env=env)
        assert code == 0, err
        async with await start_bus(
            BusSpec(meters=1, seed=87, password=METER_PASSWORD, clock_offsets_s={0: 150.0})
        ) as bus:
            meter = bus.meters[0]
            inventory = state / "inv.toml"
            inventory.write_text(
                f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
                f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
                'model = "dlt645-generic"\nhas_relay = true\n'
            )
            config = state / "headend.toml"
            config.write_text('[clock]\nboundary_guard = "1s"\nmidnight_guard = "1s"\n')
            conn = await asyncpg.connect(dsn)
            try:
                await import_inventory(conn, read_inventory(inventory))
                await add_operators(conn, o1007="operator")
                switch = ("switch", bus.url, "off", "-a", meter.address, "--operator", "1007")
                code, out, err = await headend_async(*switch, "--reason", "meter tampered", "--json", env=env)
                assert code == 0, err
                assert json.loads(out)["state"] == "confirmed" and meter.model.relay.open
                sync = ("clock", bus.url, "-a", meter.address, "--sync", "--operator", "1007")
                code, out, err = await headend_async(*sync, "--config", str(config), "--json", env=env)
                assert code == 0, err
                assert abs(meter.model.clock.error().total_seconds()) < 5
                assert await conn.fetchval("SELECT operator FROM commands WHERE cause = 'field'") == "1007"
                assert await conn.fetchval("SELECT actor FROM audit_log WHERE action = 'clock_set'") == "1007"
            finally:
                await conn.close()
    finally:
        embedded.stop("immediate")
        shutil.rmtree(state, ignore_errors=True)
