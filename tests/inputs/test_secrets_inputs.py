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
from tests.support.daemons import Daemon
from tests.support.ports import free_port


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


# (case id, secrets file content (None: the path is a directory), what the start-up warning says)
STARTUP_CASES: list[tuple[str, str | None, str]] = [
    ("path-is-directory", None, "cannot read secrets file: Is a directory"),
    ("password-letters", '[default]\npassword = "12345a"\n', "password must be 6 digits"),
    ("password-five-digits", '[meters.000000000001]\npassword = "12345"\n', "password must be 6 digits"),
    ("password-level-99", '[default]\npassword = "123456"\npassword_level = 99\n', "password_level 0..9"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("content", "message"), [c[1:] for c in STARTUP_CASES], ids=[c[0] for c in STARTUP_CASES]
)
async def test_unusable_secrets_are_warned_about_at_start(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """Said once when the daemon starts (before any meter is read), never with the password."""
    secrets = tmp_path / "secrets"
    if content is None:
        secrets.mkdir()
    else:
        secrets.write_text(content)
    config = tmp_path / "headend.toml"
    config.write_text(
        f'[database]\ndsn = "postgresql://nobody@127.0.0.1:{free_port()}/none"\n'
        f'spool_dir = "{tmp_path / "spool"}"\n[secrets]\nfile = "{secrets}"\n'
        '[metrics]\nport = 0\n[logging]\nformat = "json"\n'
    )
    daemon = await Daemon.start(config, tmp_path / "state", 0)
    try:
        record = await daemon.wait_logged("meter secrets unusable", 30)
        assert message in record["msg"] and "relay and clock writes are refused" in record["msg"]
        assert "12345" not in record["msg"] and record["level"] == "warning"
        assert len(daemon.logged("meter secrets unusable")) == 1
    finally:
        await daemon.close()
