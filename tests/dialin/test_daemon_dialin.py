"""The daemon's dial-in front end with real PostgreSQL: meters behind a DTU are polled and stored, a
channel whose DTU is not connected is offline (no failed reads of its meters), unknown identities are
listed by ``headend channels pending``, and ``[listen]`` is validated like the rest of the config."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.config import ConfigError, load_config, validate_config
from headend.engine.frontend import FrontEnd
from headend.engine.ports import DriverPort
from headend.inventory import InventoryError, import_inventory, read_inventory
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu
from tests.support.cli import CliResult, headend_in_process
from tests.support.engine import engine_for
from tests.support.logins import daemon_dsn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def config(unknown: str = "refuse") -> object:
    return validate_config(
        {
            "polling": {"interval": "1h", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": ["energy_import_kwh", "voltage_a_v"]}},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "500ms", "maximum": "1s"},
            "health": {"quarantine_after": 1, "backoff": "1h"},
            "listen": {
                "unknown": unknown,
                "pending_flush": "100ms",
                "listeners": [{"address": "127.0.0.1:0", "heartbeat": "HB", "identify_timeout": "2s"}],
            },
        },
        "test",
    )


def pending_cli(dsn: str) -> CliResult:
    """``headend channels pending --json`` (in a thread: the CLI runs its own event loop)."""
    return headend_in_process("channels", "pending", "--json", "--dsn", dsn)


def inventory(path: Path, buses: dict[str, SimBus]) -> Path:
    lines = []
    for identity, bus in buses.items():
        lines += ["[[channels]]", f'name = "{identity.lower()}"', f'url = "dtu://{identity}?baud=2400"', ""]
        for meter in bus.meters:
            lines += [
                "[[meters]]",
                f'channel = "{identity.lower()}"',
                'protocol = "dlt645-2007"',
                f'address = "{meter.address}"',
                'model = "dlt645-generic"',
                "",
            ]
    path.write_text("\n".join(lines))
    return path


async def test_dial_in_channels_are_polled_offline_ones_are_not_failures_unknown_ones_pending(
    pg_dsn: str, tmp_path: Path
) -> None:
    online_bus = SimBus(BusSpec(meters=3, seed=80, transport="carried"))
    silent_bus = SimBus(BusSpec(meters=2, seed=81, transport="carried"))
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(
        conn,
        read_inventory(inventory(tmp_path / "inv.toml", {"DTU-0080": online_bus, "DTU-0081": silent_bus})),
    )
    settings = config()
    front = await FrontEnd(settings.listen, daemon_dsn(pg_dsn)).start()  # type: ignore[attr-defined]
    port = front.listeners[0].port
    engine = engine_for(settings, pg_dsn, tmp_path, DriverPort(hub=front.hub))  # type: ignore[arg-type]
    await engine.start()
    dtus = [
        SimDtu(DtuSpec("DTU-0080", "127.0.0.1", port, heartbeat=b"HB", backoff_s=0.1), online_bus),
        SimDtu(
            DtuSpec("DTU-9999", "127.0.0.1", port, heartbeat=b"HB", backoff_s=0.1),
            SimBus(BusSpec(meters=1, seed=82, transport="carried")),
        ),
    ]
    for dtu in dtus:
        await dtu.start()
    try:
        await wait_until(
            lambda: front.hub.online(("dtu", "DTU-0080")) and front.hub.counts["refused_unknown"] >= 1
        )
        ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        engine.run_cycle(ts)
        await engine.wait_cycles()
        await engine.writer.flush()
        rows = await conn.fetch(
            "SELECT m.address, count(*) AS n FROM readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE r.ts = $1 GROUP BY 1",
            ts,
        )
        stored = {r["address"]: r["n"] for r in rows}
        assert stored == {m.address: 2 for m in online_bus.meters}  # none from the offline bus
        silent_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT m.id FROM meters m JOIN channels c ON c.id = m.channel_id "
                "WHERE c.address = 'DTU-0081'"
            )
        ]
        for meter_id in silent_ids:  # offline: no failure, no quarantine
            assert engine.health.of(meter_id).failures == 0 and not engine.health.quarantined(meter_id)
        registry = engine.metrics.registry
        offline_jobs = registry.get_sample_value(
            "headend_offline_jobs_total", {"channel": "dtu-0081", "kind": "read"}
        )
        assert offline_jobs == 2
        assert (
            registry.get_sample_value(
                "headend_read_failures_total",
                {"channel": "dtu-0081", "kind": "read", "reason": "ChannelOffline"},
            )
            is None
        )
        engine.housekeeping.refresh_gauges()
        assert registry.get_sample_value("headend_channel_offline", {"channel": "dtu-0081"}) == 1.0
        assert registry.get_sample_value("headend_channel_offline", {"channel": "dtu-0080"}) == 0.0

        # the DTU dials in later: the next cycle reads its meters through the same channel
        late = SimDtu(DtuSpec("DTU-0081", "127.0.0.1", port, heartbeat=b"HB", backoff_s=0.1), silent_bus)
        dtus.append(await late.start())
        await wait_until(lambda: front.hub.online(("dtu", "DTU-0081")))
        engine.run_cycle(ts + timedelta(minutes=30))
        await engine.wait_cycles()
        await engine.writer.flush()
        late_rows = await conn.fetchval(
            "SELECT count(*) FROM readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE r.ts = $1 AND m.address = ANY($2::text[])",
            ts + timedelta(minutes=30),
            [m.address for m in silent_bus.meters],
        )
        assert late_rows == 2 * len(silent_bus.meters)
        engine.housekeeping.refresh_gauges()
        assert registry.get_sample_value("headend_channel_offline", {"channel": "dtu-0081"}) == 0.0

        await front.flush()
        result = await asyncio.to_thread(pending_cli, pg_dsn)
        assert result.returncode == 0, result.stderr
        pending = json.loads(result.stdout)
        assert [p["identity"] for p in pending] == ["DTU-9999"]
        assert pending[0]["status"] == "refused" and pending[0]["attempts"] >= 1
        assert pending[0]["peer"].startswith("127.0.0.1:")
        # the operator adopts it: it leaves the pending list
        await conn.execute(
            "INSERT INTO channels (name, kind, address, settings) VALUES ('adopted', 'dtu', 'DTU-9999', '{}')"
        )
        result = await asyncio.to_thread(pending_cli, pg_dsn)
        assert json.loads(result.stdout) == []
    finally:
        for dtu in dtus:
            await dtu.stop()
        await engine.stop()
        await front.stop()
        await conn.close()


def test_listen_config_is_validated_with_the_key_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(
            {
                "listen": {
                    "unknown": "adopt",
                    "listeners": [
                        {"address": "9000", "kind": "gdw", "heartbeat": "hex:GG", "max_per_address": 0}
                    ],
                }
            },
            "headend.toml",
        )
    lines = str(error.value).splitlines()
    assert "headend.toml: listen.unknown: Input should be 'refuse' or 'hold'" in lines
    assert any(
        line.startswith("headend.toml: listen.listeners.0.address: must be host:port") for line in lines
    )
    assert "headend.toml: listen.listeners.0.kind: Input should be 'dtu' or 'gdw1376'" in lines
    assert "headend.toml: listen.listeners.0.heartbeat: bad hex in 'hex:GG'" in lines
    assert any(line.startswith("headend.toml: listen.listeners.0.max_per_address:") for line in lines)
    assert validate_config({}, "x").listen.listeners == []  # off by default
    example_path = Path(__file__).parents[2] / "config" / "headend.example.toml"
    assert load_config(example_path).listen.listeners == []  # the example keeps the README's default
    enabled = tmp_path / "listening.toml"  # its commented-out listeners, enabled as its comment says
    enabled.write_text(re.sub(r"^#(?=[\[a-z])", "", example_path.read_text(), flags=re.MULTILINE))
    assert [
        (entry.address, entry.kind, entry.heartbeat) for entry in load_config(enabled).listen.listeners
    ] == [
        ("127.0.0.1:9000", "dtu", "HB"),
        ("127.0.0.1:9002", "gdw1376", ""),
    ]


async def test_two_channels_cannot_claim_one_dtu(pg_dsn: str, tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text('[[channels]]\nname = "a"\nurl = "dtu://DTU-0100"\n')
    second = tmp_path / "b.toml"
    second.write_text('[[channels]]\nname = "b"\nurl = "dtu://DTU-0100?baud=1200"\n')
    conn = await asyncpg.connect(pg_dsn)
    try:
        await import_inventory(conn, read_inventory(first), "a.toml")
        with pytest.raises(InventoryError, match=r"channels\[0\]: url: dtu id 'DTU-0100' belongs to another"):
            await import_inventory(conn, read_inventory(second), "b.toml")
        await import_inventory(conn, read_inventory(first), "a.toml")  # the same channel again: fine
        assert await conn.fetchval("SELECT count(*) FROM channels WHERE kind = 'dtu'") == 1
    finally:
        await conn.close()
