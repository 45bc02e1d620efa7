"""Clock policy and relay confirmation through the engine, against simulated DL/T 645 meters.

The engine's clock module alone decides whether and how a clock is corrected (``[clock]``); the
control job's time limit follows the drivers' relay confirmation window (``[relay]``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.drivers import Credentials
from headend.engine.clock import ClockPolicy
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from simulators import BusSpec, SimBus, start_bus
from tests.support.engine import engine_for, import_buses
from tests.support.waiting import wait_until

PASSWORD = Credentials(2, "000000")  # the simulators' default level-02 password


def _config(clock: dict[str, object], relay: dict[str, object] | None = None) -> object:
    return validate_config(
        {
            "polling": {"interval": "2s", "inventory_reload": "1h"},  # clock checks start mid-interval
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": clock,
            "relay": relay or {},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "200ms", "minimum": "100ms", "maximum": "300ms"},
        },
        "test",
    )


async def _engine(
    pg_dsn: str, tmp_path: Path, bus: SimBus, config: object
) -> tuple[Engine, asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"bus": bus})
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(PASSWORD, config.relay))  # type: ignore[arg-type, attr-defined]
    await engine.start()
    return engine, conn


def _clock_checks(engine: Engine) -> float:
    value = engine.metrics.registry.get_sample_value(
        "headend_reads_total", {"channel": "bus", "kind": "clock"}
    )
    return value or 0.0


@pytest.mark.timeout(120)
async def test_only_a_clock_beyond_max_drift_is_corrected(pg_dsn: str, tmp_path: Path) -> None:
    # meter 0 is 40 s off (under max_drift 60 s), meter 1 is 120 s off: above it and above the
    # broadcast limit, so the engine has the driver write the time to meter 1 alone
    bus = await start_bus(BusSpec(meters=2, seed=81, clock_offsets_s={0: 40.0, 1: 120.0}))
    clock = {
        "check_every": "1s",
        "max_drift": "60s",
        "broadcast_limit": "10s",
        "boundary_guard": "1s",
        "midnight_guard": "1s",
    }
    engine, conn = await _engine(pg_dsn, tmp_path, bus, _config(clock))
    slow, fast = bus.meters[0].model, bus.meters[1].model
    try:

        async def corrected() -> bool:
            return abs(fast.clock.error().total_seconds()) < 5 and _clock_checks(engine) >= 4

        await wait_until(corrected, 60, "meter 1's clock to be corrected")
        rows = await conn.fetch(
            "SELECT m.address, e.kind, e.details->>'action' AS action FROM events e "
            "JOIN meters m ON m.id = e.meter_id WHERE e.category = 'comm'"
        )
        assert [(r["address"], r["kind"], r["action"]) for r in rows] == [
            (fast.address, "clock_corrected", "write")
        ]
        assert 35 < slow.clock.error().total_seconds() < 45  # within max_drift: left alone
        assert bus.requests[0x08] == 0 and bus.requests[0x14] == 2  # one write: date and time
        assert engine.metrics.registry.get_sample_value("headend_clock_corrections_total") == 1
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


@pytest.mark.timeout(120)
async def test_a_correction_the_policy_defers_is_not_counted(
    pg_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a midnight guard of 12 h covers the whole day: every check finds the drift and defers
    bus = await start_bus(BusSpec(meters=1, seed=82, clock_offsets_s={0: 120.0}))
    clock = {"check_every": "1s", "max_drift": "30s", "midnight_guard": "12h"}
    engine, conn = await _engine(pg_dsn, tmp_path, bus, _config(clock))
    caplog.set_level("INFO", logger="headend.engine")
    try:

        async def checked() -> bool:
            return _clock_checks(engine) >= 3

        await wait_until(checked, 60, "three clock checks")
        assert bus.requests[0x08] == 0 and bus.requests[0x14] == 0
        assert 115 < bus.meters[0].model.clock.error().total_seconds() < 125
        assert await conn.fetchval("SELECT count(*) FROM events WHERE category = 'comm'") == 0
        assert engine.metrics.registry.get_sample_value("headend_clock_corrections_total") == 0
        deferred = [r for r in caplog.records if r.getMessage() == "clock correction deferred"]
        assert deferred and deferred[0].reason == "too close to midnight"  # type: ignore[attr-defined]
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


@pytest.mark.parametrize(
    ("drift", "local", "action"),
    [
        (20.0, "2026-12-01T12:07:00", "none"),
        (-45.0, "2026-12-01T12:07:00", "broadcast"),
        (400.0, "2026-12-01T12:07:00", "write"),
        (400.0, "2026-12-01T23:58:00", "skipped"),
        (400.0, "2026-12-01T00:01:00", "skipped"),
        (45.0, "2026-12-01T12:14:30", "skipped"),
        (45.0, "2026-12-01T12:15:30", "skipped"),
    ],
)
def test_clock_policy_thresholds_and_guards(drift: float, local: str, action: str) -> None:
    policy = ClockPolicy(
        max_drift=30, broadcast_limit=300, boundary_interval=900, boundary_guard=60, midnight_guard=300
    )
    assert policy.decide(drift, datetime.fromisoformat(local))[0] == action


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("window", "status"), [("4s", "confirmed"), ("1s", "unconfirmed")])
async def test_a_slow_relay_is_confirmed_or_given_up_by_the_driver_not_cut_off(
    pg_dsn: str, tmp_path: Path, window: str, status: str
) -> None:
    # the relay opens 2.5 s after the command; with 200-300 ms timeouts the exchanges alone would
    # bound the job near 2 s: the confirmation window configured for the driver extends it
    bus = await start_bus(BusSpec(meters=1, seed=83, trip_delay_s=2.5))
    relay = {"confirm_timeout": window, "confirm_poll": "200ms"}
    engine, conn = await _engine(pg_dsn, tmp_path, bus, _config({"enabled": False}, relay))
    try:
        meter_id = await conn.fetchval("SELECT id FROM meters WHERE address = $1", bus.meters[0].address)
        result = await engine.control(meter_id, lambda d: d.switch("off", operator="1"))
        assert result.status == status
        if status == "confirmed":
            assert result.state.open and bus.meters[0].model.relay.open
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
