"""Meter events end to end: a simulated DL/T 645-2007 bus whose fault plan makes each event a
utility watches happen (covers, magnetic field, loss of voltage and phase failure per phase, reverse
power, programming, meter and event clear, a power outage, a low clock battery), collected by
``headend run`` every two seconds; each record is stored once with the meter's own times, however
often it is collected, and the battery condition opens and closes one event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from protocols.dlt645.events import EVENT_KINDS
from simulators.bus import BusSpec, SimBus, start_bus
from tests.support.daemons import Daemon
from tests.support.engine import inventory_file
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

PLAN = (
    "meter_cover_open=#0@1+2,meter_cover_open=#0@5+1,magnetic_interference=#0@1+3,voltage_loss_b=#0@2+2,"
    "meter_clear=#0@2+0,clock_battery_low=#0@15+8,"
    "terminal_cover_open=#1@1+2,phase_failure_c=#1@1+3,reverse_power=#1@2+2,programming=#1@1+0,"
    "event_clear=#1@3+0,power_outage=#1@4+2"
)
RECORDS = {  # meter index -> the records its plan leaves (kind: how many)
    0: {"meter_cover_open": 2, "magnetic_interference": 1, "voltage_loss_b": 1, "meter_clear": 1},
    1: {
        "terminal_cover_open": 1,
        "phase_failure_c": 1,
        "reverse_power": 1,
        "programming": 1,
        "event_clear": 1,
        "power_down": 1,
    },
}


def _config(path: Path, dsn: str, tmp_path: Path, metrics_port: int) -> Path:
    kinds = ", ".join(f'"{k}"' for k in EVENT_KINDS)
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "2s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n"
        f'[events]\ncollect_every = "2s"\nkinds = [{kinds}]\n'
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


def _utc(local: datetime, bus: SimBus, index: int) -> datetime:
    """A meter-local time of the simulator as the driver stores it (UTC, to the second)."""
    offset = bus.meters[index].model.clock.utc_offset
    return (local.replace(microsecond=0) - offset).replace(tzinfo=UTC)


def _expected(bus: SimBus) -> set[tuple[str, str, datetime, datetime | None]]:
    """Every record the simulated meters keep, from their own state: (address, kind, start, end)."""
    out: set[tuple[str, str, datetime, datetime | None]] = set()
    for index, meter in enumerate(bus.meters[:2]):
        model = meter.model
        for kind, spans in model.spans.items():
            out |= {(meter.address, kind, _utc(s, bus, index), _utc(e, bus, index)) for s, e in spans}
        for kind, stamps in model.stamps.items():
            out |= {(meter.address, kind, _utc(t, bus, index), None) for t, _op in stamps}
        out |= {
            (meter.address, "power_down", _utc(s, bus, index), _utc(e, bus, index))
            for s, e in model.power_downs
        }
    return out


async def test_each_planned_event_is_stored_once_with_the_meters_times(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=3, seed=2404, faults=PLAN))
    assert import_inventory_cli(pg_dsn, inventory_file(tmp_path / "inv.toml", {"bus": bus})).returncode == 0
    port = free_port()
    daemon = await Daemon.start(
        _config(tmp_path / "headend.toml", pg_dsn, tmp_path, port), tmp_path / "state", port
    )
    conn = await asyncpg.connect(pg_dsn)
    query = (
        "SELECT m.address, e.kind, e.occurred_at, e.ended_at, e.details FROM events e"
        " JOIN meters m ON m.id = e.meter_id WHERE e.category = 'meter' AND e.kind <> 'clock_battery_low'"
    )
    try:
        want = sum(sum(kinds.values()) for kinds in RECORDS.values())

        async def all_recorded() -> bool:
            return len(_expected(bus)) == want and len(await conn.fetch(query)) >= want

        try:
            await wait_until(all_recorded, 90, "every planned event record stored")
        except AssertionError as exc:
            found = await conn.fetch(query)
            stored = {(r["address"], r["kind"], r["occurred_at"], r["ended_at"]) for r in found}
            notes = [r for r in daemon.records if r.get("level") in ("warning", "error") or "event" in str(r)]
            raise AssertionError(
                f"{exc}: missing {sorted(_expected(bus) - stored)}, extra {sorted(stored - _expected(bus))},"
                f" the daemon's notes {notes[-20:]}"
            ) from None
        # two more collections of all three meters: nothing is stored twice
        jobs = await daemon.metric("headend_job_seconds_count", 'kind="events"')

        async def collected_twice_more() -> bool:
            return await daemon.metric("headend_job_seconds_count", 'kind="events"') >= jobs + 6

        await wait_until(collected_twice_more, 30, "two more event collections")
        rows = await conn.fetch(query)
        stored = {(r["address"], r["kind"], r["occurred_at"], r["ended_at"]) for r in rows}
        assert len(rows) == want and stored == _expected(bus)
        by_meter = {
            index: {
                k: sum(1 for r in rows if r["address"] == bus.meters[index].address and r["kind"] == k)
                for k in kinds
            }
            for index, kinds in RECORDS.items()
        }
        assert by_meter == RECORDS
        assert not [r for r in rows if r["address"] == bus.meters[2].address]  # the quiet meter has none

        # the clock battery: one event from the first time it was seen low to the first time seen fine
        battery_query = (
            "SELECT e.occurred_at, e.ended_at, m.address FROM events e JOIN meters m ON m.id = e.meter_id"
            " WHERE e.kind = 'clock_battery_low'"
        )

        async def battery_closed() -> bool:
            found = await conn.fetch(battery_query)
            return bool(found) and all(r["ended_at"] is not None for r in found)

        await wait_until(battery_closed, 60, "the battery event closed")
        battery = await conn.fetch(battery_query)
        assert [r["address"] for r in battery] == [bus.meters[0].address]
        assert battery[0]["ended_at"] - battery[0]["occurred_at"] < timedelta(seconds=8 + 2 * 2 + 2)
    finally:
        await conn.close()
        await daemon.close()
        await bus.stop()
