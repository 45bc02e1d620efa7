"""A missing or broken secrets file costs relay and clock writes only: meters are still read."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from headend.config import HealthConfig, TimeoutConfig
from headend.engine.health import HealthBook
from headend.engine.jobs import Job, Priority
from headend.engine.model import ChannelSpec, MeterSpec
from headend.engine.ports import DriverPort
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from simulators import BusSpec, start_bus
from tests.support.cli import cli_env, headend_async


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "content", [None, "not [toml", "[default]\npassword = 'short'\n"], ids=["missing", "broken", "bad"]
)
async def test_daemon_reads_every_meter_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None
) -> None:
    secrets = tmp_path / "secrets.toml"
    if content is not None:
        secrets.write_text(content)
    bus = await start_bus(BusSpec(meters=3, seed=91))
    spec = ChannelSpec(1, "bus-x", bus.url + "?gap_ms=0")
    meters = [
        MeterSpec(
            i + 1, 1, "dlt645-2007", m.address, None, "dlt645-generic", datetime.now(UTC), f"Flat {i + 1}"
        )
        for i, m in enumerate(bus.meters)
    ]
    health = HealthBook(
        TimeoutConfig(initial=1.0, minimum=0.2, maximum=1.0), HealthConfig(quarantine_after=1)
    )
    port = DriverPort(str(secrets))
    worker = ChannelWorker(spec, meters, port.open_channel, port.make_driver, health, EngineMetrics())
    caplog.set_level(logging.WARNING, logger="headend.engine.ports")
    worker.start()
    try:
        reads = [
            worker.submit(
                Job(
                    Priority.SCHEDULED,
                    meter_id=m.id,
                    kind="scheduled",
                    body=lambda d: d.read(["energy_import_kwh"]),
                )
            )
            for m in meters
        ]
        values = await asyncio.gather(*reads)
        assert all(v["energy_import_kwh"] > 0 for v in values)
        assert health.quarantined_count() == 0
        switch = await worker.submit(
            Job(Priority.CONTROL, meter_id=1, kind="control", body=lambda d: d.switch("off", operator="ops1"))
        )
        assert switch.status == "failed" and "no password configured" in switch.reason
        assert not bus.meters[0].model.relay.open  # nothing was sent to the relay
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == [
            "meter secrets unavailable: meters are still read, relay and clock writes are refused"
        ]
    finally:
        await worker.stop()
        await bus.stop()


async def test_cli_reads_without_the_secrets_file() -> None:
    async with await start_bus(BusSpec(meters=1, seed=92)) as bus:
        env = cli_env(drop=["HEADEND_METER_PASSWORD"], HEADEND_SECRETS_FILE="/nonexistent/secrets.toml")
        args = ("read", bus.url, "-a", bus.meters[0].address, "energy_import_kwh", "--json")
        code, out, err = await headend_async(*args, env=env, timeout=60)
        assert code == 0, err
        assert '"energy_import_kwh"' in out
