"""One time-of-use campaign over meters on every kind of channel the daemon owns: a direct bus, a
dial-in DTU (its connection verified by the meter's recorded number), a second DTU nothing verifies
and a Q/GDW 1376.1 concentrator (the same DL/T 645 frames forwarded in AFN 10 F1). The engine runs
the campaign runner in the test's loop, beside the simulators and the dial-in listener. The direct,
verified-DTU and concentrator meters end verified and, after the switch time, put their energy into
the register the new schedule names; the unverified DTU's meter fails with the reason and no frame
carrying the meter password reaches it (write frames counted at its simulated bus).

The verified DTU's meter and the concentrator's meter drop offline in the middle of their writes (a
planned fault: each acknowledges its 2nd / 1st write and answers nothing after it), so their first
attempt ends unanswered; they come back before the retry, which writes only what the first did not.
Each ends verified after two attempts, every item changed exactly once at the meter, and exactly
one write frame more than the items reached it: the one left unanswered, never repeated in its
attempt."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from protocols.dlt645.tou import daily_table_di
from simulators import BusSpec, SimBus, start_bus
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from simulators.dlt645_server import Dlt645Meter
from simulators.dtu import DtuSpec, SimDtu
from simulators.meter import SimMeter
from tests.dialin.test_listener import HB, front_end
from tests.params.test_campaign_daemon import zone_at
from tests.support.cli import CliResult, headend_in_process
from tests.support.engine import engine_for
from tests.support.operators import add_operators, operator_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
METER_PASSWORD = "000000"  # what every simulator here holds (the concentrator's meters' default)
WRITE = 0x14
NEW = 1  # the new schedule: all day sharp; every meter starts on all day flat (t3)


def cli(*args: str) -> CliResult:
    return headend_in_process(*args, env=operator_env())


def _inventory(path: Path, direct: SimBus, dtus: dict[str, SimBus], conc: SimConcentrator) -> Path:
    lines = ["[[channels]]", 'name = "direct"', f'url = "{direct.url}?parity=N"', ""]
    meters = [("direct", m.address, "") for m in direct.meters]
    for identity, bus in dtus.items():
        name = identity.lower()
        lines += ["[[channels]]", f'name = "{name}"', f'url = "dtu://{identity}"', ""]
        recorded = identity.endswith("1")  # the first DTU's meter has its number on record
        meters += [(name, m.address, f'meter_number = "{m.address}"' if recorded else "") for m in bus.meters]
    url = f"gdw1376+tcp://127.0.0.1:{conc.bound_port}?address={conc.address.key}"
    lines += ["[[channels]]", 'name = "conc"', f'url = "{url}"', ""]
    meters += [
        ("conc", m.address, f"port = {conc.pool.port_of[m.address]}\npn = {i + 1}")
        for i, m in enumerate(conc.pool.meters)
    ]
    for channel, address, extra in meters:
        lines += ["[[meters]]", f'channel = "{channel}"', 'protocol = "dlt645-2007"']
        lines += [f'address = "{address}"', 'model = "dlt645-generic"', extra, ""]
    path.write_text("\n".join(lines))
    return path


def _config() -> object:
    return validate_config(
        {
            "polling": {"interval": "1h", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "1s", "maximum": "2s"},
            "engine": {"services": ["headend.params.runner:run"]},
            "campaigns": {"timezone": zone_at(12)},
        },
        "test",
    )


async def _back_after_first_try(
    conn: asyncpg.Connection, planned: dict[str, tuple[Dlt645Meter, int]]
) -> None:
    """Each meter (address -> meter, writes it took) answers again once its first attempt is recorded
    unanswered with a retry due later, having taken the writes planned before it dropped offline."""
    waiting = dict(planned)

    async def all_back() -> bool:
        found = await conn.fetch(
            "SELECT m.address FROM tou_campaign_meters x JOIN meters m ON m.id = x.meter_id"
            " WHERE m.address = ANY($1::text[]) AND x.state = 'pending' AND x.attempts = 1"
            " AND x.next_try_at > now()",
            list(waiting),
        )
        for r in found:
            meter, written = waiting.pop(r["address"])
            assert meter.model.event_counts["programming"] == written  # the fault landed mid-writes
            meter.model.offline = False
        return not waiting

    await wait_until(all_back, 30, "the first attempts unanswered")


def _grown(model: SimMeter, advance: object) -> list[float]:
    before = list(model.registers.import_tariffs[1:])
    advance()  # type: ignore[operator]
    model.advance()
    return [round(a - b, 6) for a, b in zip(model.registers.import_tariffs[1:], before, strict=True)]


async def test_one_campaign_over_a_direct_bus_dtus_and_a_concentrator(pg_dsn: str, tmp_path: Path) -> None:
    direct = await start_bus(BusSpec(meters=1, seed=2511, password=METER_PASSWORD))
    dtu_buses = {
        f"DTU-251{i}": SimBus(BusSpec(meters=1, seed=2511 + i, transport="carried", password=METER_PASSWORD))
        for i in (1, 2)
    }
    conc = SimConcentrator(
        ConcentratorSpec(port=0, listen=True, meters=1, ports=1, latency_ms=5, line_timing=False, seed=25)
    )
    await conc.start()
    dtu_bus = dtu_buses["DTU-2511"]
    dtu_bus.meters[0].offline_after_programming = 2  # acknowledges its 2nd write, then silent
    conc.pool.meters[0].offline_after_programming = 1  # acknowledges its 1st write, then silent
    models = {
        "direct": direct.meters[0].model,
        "dtu": dtu_buses["DTU-2511"].meters[0].model,
        "unverified": dtu_buses["DTU-2512"].meters[0].model,
        "conc": conc.pool.meters[0].model,
    }
    for model in models.values():
        model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    set_file = tmp_path / "set.json"
    set_file.write_text(
        json.dumps({"seasons": [{"start": "01-01", "table": 1}],
                    "daily_tables": [[{"start": "00:00", "tariff": NEW}]], "tariffs": 4})
    )  # fmt: skip
    conn = await asyncpg.connect(pg_dsn)
    engine = None
    dtus: list[SimDtu] = []
    async with front_end() as (hub, listener):
        try:
            await add_operators(conn, o2511="operator", o2512="approver", o2513="admin")
            inventory = _inventory(tmp_path / "inv.toml", direct, dtu_buses, conc)
            await import_inventory(conn, read_inventory(inventory))
            switch_local = models["direct"].clock.local().replace(second=0) + dt.timedelta(minutes=30)
            switch_at = switch_local.replace(tzinfo=dt.timezone(dt.timedelta(hours=8))).isoformat()
            steps = [
                ("params", "set", "add", "s", "--file", str(set_file), "--operator", "2513"),
                ("params", "campaign", "create", "c", "--set", "s", "--switch-at", switch_at,
                 *(f"--channel={c}" for c in ("direct", "dtu-2511", "dtu-2512", "conc")),
                 "--operator", "2511"),
                ("params", "campaign", "approve", "c", "--operator", "2512"),
                ("params", "campaign", "start", "c", "--operator", "2511"),
            ]  # fmt: skip
            for step in steps:
                done = await asyncio.to_thread(cli, *step, "--dsn", pg_dsn)
                assert done.returncode == 0, (step, done.stderr)
            port = DriverPort(secrets=Credentials(2, METER_PASSWORD), hub=hub)
            engine = engine_for(_config(), pg_dsn, tmp_path, port)  # type: ignore[arg-type]
            await engine.start()
            for identity, bus in dtu_buses.items():
                spec = DtuSpec(identity, "127.0.0.1", listener.port, heartbeat=HB, backoff_s=0.05)
                dtus.append(await SimDtu(spec, bus).start())

            async def finished() -> bool:
                return await conn.fetchval("SELECT state FROM tou_campaigns WHERE name = 'c'") == "done"

            dropping = {m.address: (m, n) for m, n in ((dtu_bus.meters[0], 2), (conc.pool.meters[0], 1))}
            await _back_after_first_try(conn, dropping)
            await wait_until(finished, 60, "the campaign done")
            found = await conn.fetch(
                "SELECT c.name, x.state, x.reason, x.attempts FROM tou_campaign_meters x"
                " JOIN meters m ON m.id = x.meter_id JOIN channels c ON c.id = m.channel_id"
            )
            assert {r["name"]: (r["state"], r["reason"], r["attempts"]) for r in found} == {
                "direct": ("verified", None, 1),
                "dtu-2511": ("verified", None, 2),
                "dtu-2512": (
                    "failed",
                    "dtu://DTU-2512: the meters behind this connection are not verified: no password sent",
                    1,
                ),
                "conc": ("verified", None, 2),
            }
            # every item changed once at each meter; one write frame more reached the two that
            # dropped offline (the unanswered one, not repeated), none more
            changed = models["direct"].event_counts["programming"]
            assert changed > 2 and direct.requests[WRITE] == changed
            for key in ("dtu", "conc"):
                assert models[key].event_counts["programming"] == changed, key
            assert dtu_bus.requests[WRITE] == changed + 1
            port = conc.pool.port_of[conc.pool.meters[0].address]
            assert conc.pool.responders[port].requests[WRITE] == changed + 1
            assert dtu_buses["DTU-2512"].requests[WRITE] == 0  # no frame with the password reached it
            assert hub.counts["secret_refused_unverified"] >= 1
            assert conc.counts["forwards"] > 0
            for key in ("direct", "dtu", "conc"):
                assert models[key].tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": NEW}], key
            assert models["unverified"].tou.switch["04000107"] is None

            # past the switch: every verified meter puts its energy into the new register
            sources = {
                "direct": direct.source,
                "dtu": dtu_buses["DTU-2511"].source,
                "unverified": dtu_buses["DTU-2512"].source,
                "conc": conc.source,
            }
            for key, model in models.items():
                _grown(model, lambda key=key: sources[key].advance(45 * 60))
                grown = _grown(model, lambda key=key: sources[key].advance(60 * 60))
                register = 3 if key == "unverified" else NEW
                assert grown[register - 1] > 0 and sum(grown) == grown[register - 1], (key, grown)
        finally:
            for sim in dtus:
                await sim.stop()
            if engine is not None:
                await engine.stop()
            await conn.close()
            await conc.stop()
            await direct.stop()
