"""A time-of-use campaign end to end: created, approved by a second person and started in the CLI, run
by ``headend run`` on a simulated DL/T 645-2007 bus with mixed starting schedules and one meter whose
password differs. The meters that take the password end verified (the standby set of each, whichever
set that is), the other failed with the decoded refusal; after the switch time the meters put their
energy into the register the new schedule names."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import asyncpg

from protocols.dlt645.tou import daily_table_di
from simulators.bus import BusSpec, start_bus
from tests.support import cli
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.operators import PASSWORD, add_operators, import_inventory_cli, operator_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

METER_PASSWORD = "314159"


def headend(dsn: str, *args: str) -> cli.CliResult:
    return cli.headend(*args, "--dsn", dsn, env=operator_env(PASSWORD))


def all_day_sharp(path: Path) -> Path:
    """A parameter set file at ``path``: one season, one daily table, all day in tariff 1 (sharp)."""
    path.write_text(
        json.dumps(
            {"seasons": [{"start": "01-01", "table": 1}], "daily_tables": [[{"start": "00:00", "tariff": 1}]],
             "tariffs": 4}
        )
    )  # fmt: skip
    return path


def zone_at(hour: int) -> str:
    """A fixed-offset zone whose local hour is now ``hour`` (the campaign windows' clock in a test)."""
    offset = (hour - dt.datetime.now(dt.UTC).hour + 12) % 24 - 12  # -12..11 hours east of UTC
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def _config(tmp_path: Path, dsn: str, port: int, campaigns: str = "") -> Path:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[default]\npassword_level = 2\npassword = "{METER_PASSWORD}"\n')
    path = tmp_path / "headend.toml"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "1h"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[secrets]\nfile = "{secrets}"\n'
        '[engine]\nservices = ["headend.params.runner:run"]\n'
        f'[campaigns]\ntimezone = "{zone_at(12)}"\n{campaigns}'
        f'[metrics]\nport = {port}\n[logging]\nformat = "json"\n'
    )
    return path


def _grown(before: list[float], after: list[float]) -> list[float]:
    return [round(a - b, 6) for a, b in zip(after, before, strict=True)]


async def test_a_campaign_runs_in_the_daemon_two_people_verified_or_failed(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=3, seed=2501, password=METER_PASSWORD))
    # mixed starting schedules: meters 0 and 2 run their first set, all day flat (t3); meter 1 already
    # runs its second set, all day valley (t4), so its standby set is the first
    for meter in bus.meters:
        meter.model.tou.write(daily_table_di(1, 1), [{"start": "00:00", "tariff": 3}])
    bus.meters[1].model.tou.write(daily_table_di(2, 1), [{"start": "00:00", "tariff": 4}])
    bus.meters[1].model.tou.run_set(2)
    bus.meters[2].passwords = {2: "000001"}  # not the password the secrets file gives
    new = 1  # the new schedule: all day sharp
    set_file = all_day_sharp(tmp_path / "set.json")
    conn = await asyncpg.connect(pg_dsn)
    daemon = None
    try:
        await add_operators(conn, o5101="operator", o5102="approver", o5103="admin")
        assert (
            import_inventory_cli(pg_dsn, inventory_file(tmp_path / "inv.toml", {"bus": bus})).returncode == 0
        )
        done = headend(
            pg_dsn, "params", "set", "add", "flat-new", "--file", str(set_file), "--operator", "5103"
        )
        assert done.returncode == 0, done.stderr
        switch_local = bus.meters[0].model.clock.local().replace(second=0) + dt.timedelta(minutes=30)
        switch_at = switch_local.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
        create = headend(pg_dsn, "params", "campaign", "create", "c1", "--set", "flat-new",
                         "--switch-at", switch_at.isoformat(), "--channel", "bus",
                         "--operator", "5101")  # fmt: skip
        assert create.stdout.strip() == "campaign c1 created with 3 meters; a different approver approves it"
        early = headend(pg_dsn, "params", "campaign", "start", "c1", "--operator", "5101")
        assert early.returncode == 1 and "cannot go from draft to running" in early.stderr

        port = free_port()
        daemon = await Daemon.start(_config(tmp_path, pg_dsn, port), tmp_path / "state", port)
        # a dry run of the draft: the daemon reads every meter, writes nothing
        assert headend(pg_dsn, "params", "campaign", "dry-run", "c1", "--operator", "5101").returncode == 0

        async def all_read() -> bool:
            return await conn.fetchval("SELECT count(dry_run_at) FROM tou_campaign_meters") == 3

        await wait_until(all_read, 60, "the dry run of every meter")
        findings = {
            m["address"]: m["dry_run"]
            for m in json.loads(headend(pg_dsn, "params", "campaign", "show", "c1", "--json").stdout)[
                "meters"
            ]
        }
        addresses = [m.address for m in bus.meters]
        assert findings[addresses[1]]["04010001 first_set_daily_table_1"] == [
            [{"start": "00:00", "tariff": 3}],
            [{"start": "00:00", "tariff": new}],
        ]
        assert findings[addresses[1]]["04000107 daily_table_switch_time"][0] is None
        assert "04020001 second_set_daily_table_1" in findings[addresses[0]]
        assert all("programming" not in m.model.event_counts for m in bus.meters)  # nothing written

        assert headend(pg_dsn, "params", "campaign", "approve", "c1", "--operator", "5102").returncode == 0
        bus.meters[0].model.offline = True  # meter 0 does not answer its first attempt
        assert headend(pg_dsn, "params", "campaign", "start", "c1", "--operator", "5101").returncode == 0

        async def first_try_missed() -> bool:
            found = await conn.fetchrow(
                "SELECT x.state, x.attempts, x.next_try_at > now() AS later FROM tou_campaign_meters x"
                " JOIN meters m ON m.id = x.meter_id WHERE m.address = $1",
                addresses[0],
            )
            return found is not None and (found["attempts"], found["state"], found["later"]) == (
                1,
                "pending",
                True,
            )

        await wait_until(first_try_missed, 60, "meter 0's first attempt unanswered")
        bus.meters[0].model.offline = False

        async def finished() -> bool:
            return await conn.fetchval("SELECT state FROM tou_campaigns WHERE name = 'c1'") == "done"

        await wait_until(finished, 60, "the campaign done")
        shown = json.loads(headend(pg_dsn, "params", "campaign", "show", "c1", "--json").stdout)
        states = {m["address"]: (m["state"], m["reason"], m["attempts"]) for m in shown["meters"]}
        assert states == {
            addresses[0]: ("verified", None, 2),
            addresses[1]: ("verified", None, 1),
            addresses[2]: ("failed", "meter refused: password error", 1),
        }
        # each wrote its standby set only: meter 0 the second, meter 1 the first; the refused one nothing
        models = [m.model for m in bus.meters]
        assert models[0].tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": new}]
        assert models[1].tou.daily_tables[(1, 1)] == [{"start": "00:00", "tariff": new}]
        assert models[1].tou.daily_tables[(2, 1)] == [{"start": "00:00", "tariff": 4}]
        assert models[2].tou.switch["04000107"] is None
        # every item a write changes was written exactly once (one programming event each), retry or not
        for index in (0, 1):
            assert models[index].event_counts["programming"] == len(findings[addresses[index]])
        assert "programming" not in models[2].event_counts
        listed = [
            json.loads(line) for line in headend(pg_dsn, "params", "campaign", "list").stdout.splitlines()
        ]
        assert listed[0]["meters"] == {"verified": 2, "failed": 1}

        # past the switch: meters 0 and 1 put everything into the new register, meter 2 does not
        bus.source.advance(45 * 60)
        for model in models:
            model.advance()
        before = [list(model.registers.import_tariffs[1:]) for model in models]
        bus.source.advance(60 * 60)
        for model in models:
            model.advance()
        grown = [
            _grown(b, list(model.registers.import_tariffs[1:]))
            for b, model in zip(before, models, strict=True)
        ]
        for index in (0, 1):
            assert grown[index][new - 1] > 0 and sum(grown[index]) == grown[index][new - 1], grown[index]
            assert (models[index].tou.active_tables, models[index].tou.active_seasons) == (
                (2, 2) if index == 0 else (1, 1)
            )
        assert grown[2][2] > 0 and sum(grown[2]) == grown[2][2], grown[2]  # still its flat t3
    finally:
        await conn.close()
        if daemon is not None:
            await daemon.close()
        await bus.stop()
