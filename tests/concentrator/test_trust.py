"""``headend channels trust`` through the real interfaces (``headend run`` as a process, the simulated
concentrator dialling in, the CLI as processes): a replacement concentrator with an empty archive is
closed as an impostor as before; a viewer's grant is refused by the database; an admin's grant lets
its next login stay for the archive push only (no readings stored as actual, nothing else sent);
the push through the daemon reads back agreeing, the login is then verified the ordinary way and
actual readings flow. Who granted it, why, and the login that used it are recorded and audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from simulators.bus import DEFAULT_PASSWORD
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS, inventory_toml
from tests.concentrator.test_archive_requests import PW, daemon_config
from tests.support.cli import CliResult, cli_env, headend_async
from tests.support.daemons import Daemon
from tests.support.operators import add_operators, import_inventory_cli, operator_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


async def headend(dsn: str, *args: str) -> CliResult:
    environment = cli_env(HEADEND_METER_PASSWORD=DEFAULT_PASSWORD) | operator_env()
    return await headend_async(*args, "--dsn", dsn, env=environment, timeout=150)


@pytest.mark.long(seconds=65)
async def test_an_admin_trusts_a_replacement_concentrator_for_its_archive_push_only(
    pg_dsn: str, tmp_path: Path
) -> None:
    listen_port, metrics_port = free_port(), free_port()
    spec = ConcentratorSpec(
        port=listen_port,
        address=ADDRESS,
        meters=3,
        latency_ms=20,
        redial_s=0.5,
        login_timeout_s=2,
        pw=PW,
        collect_period_s=1.0,
    )
    sim = SimConcentrator(spec)
    imported = await asyncio.to_thread(
        import_inventory_cli, pg_dsn, inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim)
    )
    assert imported.returncode == 0, imported.stderr
    sim.pool.archive.clear()  # a replacement concentrator: its archive lists none of the inventory's meters
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o31="operator", o32="viewer", o33="admin")
    config = daemon_config(tmp_path, pg_dsn, listen_port, metrics_port)
    config.write_text(config.read_text().replace('interval = "1h"', 'interval = "2s"\noffset = "0s"'))
    daemon = await Daemon.start(config, tmp_path, metrics_port)

    async def energy(quality: str) -> set[str]:
        found = await conn.fetch(
            "SELECT DISTINCT m.address FROM readings r JOIN meters m ON m.id = r.meter_id"
            " JOIN quantities q ON q.id = r.quantity_id"
            " WHERE q.name = 'energy_import_kwh' AND r.quality::text = $1",
            quality,
        )
        return {r["address"] for r in found}

    try:
        await daemon.wait_logged("engine started")
        async with sim:
            # as before: an archive that lacks the inventory's meters is not theirs: closed
            async def closed() -> bool:
                return await daemon.metric("headend_dialin_events", '{event="identity_mismatch"}') >= 2

            await wait_until(closed, 60, "the concentrator closed as an impostor")

            # a viewer may not trust it: the database refuses
            trust = ("channels", "trust", "conc-1", "--reason", "replaced on site, ticket 4411", "--json")
            code, out, err = await headend(pg_dsn, *trust, "--operator", "32")
            assert (code, out) == (1, "") and err.strip() == (
                "error: trusting a dial-in device needs an authenticated operator with the admin role"
            ), err
            assert await conn.fetchval("SELECT count(*) FROM channel_trusts") == 0

            code, out, err = await headend(pg_dsn, *trust, "--operator", "33", "--minutes", "10")
            assert code == 0, err
            granted = json.loads(out)
            assert (granted["channel"], granted["granted_by"]) == ("conc-1", "33")

            async def used() -> bool:
                return await conn.fetchval("SELECT used_at IS NOT NULL FROM channel_trusts") is True

            await wait_until(used, 60, "the next login to claim the grant")
            assert await energy("actual") == set() and sim.counts["afn_04"] == 0

            code, out, err = await headend(
                pg_dsn, "concentrator", "archive", "push", "conc-1", "--operator", "31", "--yes", "--json"
            )
            assert code == 0, err
            pushed = json.loads(out)
            assert pushed["pushed"] == 3 and pushed["agrees"] is True
            assert sim.counts["afn_04"] == 1  # the archive, and nothing else that needs the PW
            assert {r.address for r in sim.pool.archive.values()} == {m.address for m in sim.pool.meters}

            async def flowing() -> bool:
                return await energy("actual") == {m.address for m in sim.pool.meters}

            await wait_until(flowing, 90, "actual readings of every meter once the archive agrees")
            assert await energy("suspect") == set()
            assert sim.counts["afn_04"] == 1

        trail = await conn.fetch(
            "SELECT actor, action, reason FROM audit_log WHERE action LIKE 'channel.trust.%' ORDER BY id"
        )
        assert [tuple(r) for r in trail] == [
            ("33", "channel.trust.granted", "replaced on site, ticket 4411"),
            ("system", "channel.trust.used", "replaced on site, ticket 4411"),
        ]
        peer = await conn.fetchval("SELECT used_peer FROM channel_trusts")
        assert peer.startswith("127.0.0.1:")
    finally:
        await daemon.close()
        await conn.close()
