"""The engine follows inventory changes without a restart and runs in-daemon services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

import headend.config
from headend.config import validate_config
from headend.inventory import import_inventory, read_inventory
from headend.services import ServiceHost
from tests.support.engine import engine_for
from tests.support.waiting import wait_until

SERVICE_CALLS: list[str] = []


async def recording_service(host: ServiceHost) -> None:
    """An in-daemon service as fee control would add one: runs on the host's pool until the engine stops."""
    SERVICE_CALLS.append(f"started with pool answering {await host.pool.fetchval('SELECT 1')}")
    try:
        await asyncio.Event().wait()
    finally:
        SERVICE_CALLS.append("stopped")


def _config() -> object:
    return validate_config(
        {
            "polling": {"interval": "1h", "inventory_reload": "200ms"},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "engine": {"services": [f"{__name__}:recording_service"]},
        },
        "test",
    )


async def test_inventory_changes_are_picked_up_while_running(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the service allowlist names the project's services; this test adds its own recording one
    monkeypatch.setattr(
        headend.config, "SERVICES", headend.config.SERVICES | {f"{__name__}:recording_service"}
    )
    conn = await asyncpg.connect(pg_dsn)
    engine = engine_for(_config(), pg_dsn, tmp_path)
    await engine.start()
    try:
        assert engine.workers == {}
        await wait_until(lambda: SERVICE_CALLS[-1:] == ["started with pool answering 1"])
        inv = tmp_path / "inv.toml"
        inv.write_text(
            '[[channels]]\nname = "a"\nurl = "tcp://127.0.0.1:9"\n'
            '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "1"\nmodel = "dlt645-generic"\n'
            '[[meters]]\nchannel = "a"\nprotocol = "dlt645-2007"\naddress = "2"\nmodel = "dlt645-generic"\n'
        )
        await import_inventory(conn, read_inventory(inv))
        await wait_until(
            lambda: len(engine.workers) == 1 and len(next(iter(engine.workers.values())).meters) == 2
        )
        worker = next(iter(engine.workers.values()))
        assert worker.spec.url == "tcp://127.0.0.1:9"

        await conn.execute(
            "UPDATE meters SET enabled = false, updated_at = now() WHERE address = '000000000001'"
        )
        await wait_until(lambda: [m.address for m in worker.meters.values()] == ["000000000002"])
        with pytest.raises(LookupError, match="not in the enabled inventory"):
            disabled = await conn.fetchval("SELECT id FROM meters WHERE address = '000000000001'")
            await engine.read_now(disabled, ["energy_import_kwh"])

        await conn.execute(
            "UPDATE channels SET settings = jsonb_set(settings, '{url}', '\"tcp://127.0.0.1:10\"'),"
            " updated_at = now()"
        )
        await wait_until(lambda: [w.spec.url for w in engine.workers.values()] == ["tcp://127.0.0.1:10"])
        assert next(iter(engine.workers.values())) is not worker  # a new worker owns the changed bus

        await conn.execute("UPDATE channels SET enabled = false, updated_at = now()")
        await wait_until(lambda: engine.workers == {})
    finally:
        await engine.stop()
        await conn.close()
    assert SERVICE_CALLS[-1] == "stopped"
