"""A meter request for a meter behind a DTU that dials in to ``headend run``: while the DTU is not
connected the request waits (it is neither claimed nor failed); once it dials in the request is
answered; one whose DTU never connects before it expires is expired with that reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from headend.operators import authenticate
from headend.store.meter_requests import create_read_request, get_request, wait_request
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu
from tests.support.daemons import Daemon
from tests.support.logins import desk_dsn
from tests.support.operators import PASSWORD, add_operators, import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

IDENTITY = "DTU-0090"


async def test_a_request_waits_for_its_dtu_then_is_answered_or_expires(pg_dsn: str, tmp_path: Path) -> None:
    bus = SimBus(BusSpec(meters=1, seed=90, transport="carried"))
    address = bus.meters[0].address
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "dtu-0090"\nurl = "dtu://{IDENTITY}?baud=2400"\n\n'
        f'[[meters]]\nchannel = "dtu-0090"\nprotocol = "dlt645-2007"\naddress = "{address}"\n'
        'model = "dlt645-generic"\n'
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    owner = await asyncpg.connect(pg_dsn)
    await add_operators(owner, o61="operator")
    meter_id = await owner.fetchval("SELECT id FROM meters WHERE address = $1", address)
    await owner.close()
    listen_port, metrics_port = free_port(), free_port()
    config = tmp_path / "headend.toml"
    config.write_text(
        f'[database]\ndsn = "{pg_dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "1d"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n[requests]\nsweep_every = "1s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
        f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nheartbeat = "HB"\n'
    )
    daemon = await Daemon.start(config, tmp_path / "state", metrics_port)
    desk = await asyncpg.connect(desk_dsn(pg_dsn))
    await authenticate(desk, "61", PASSWORD, None)
    dtu = SimDtu(DtuSpec(IDENTITY, "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.1), bus)
    try:
        await daemon.wait_logged("engine started")
        waiting = await create_read_request(desk, meter_id, "61")
        # three sweeps later it still waits for the DTU, neither claimed nor failed
        request = await wait_request(desk, waiting, 3.0)
        assert request.state == "requested"
        assert await daemon.metric("headend_meter_requests_total") == 0
        await dtu.start()
        request = await wait_request(desk, waiting, 60.0)
        label = f"dtu-0090/{address} ({address})"
        assert (request.state, request.reason) == ("done", f"read 1 value(s) of meter {label}")
        assert request.result is not None
        values = request.result["values"]
        assert isinstance(values, dict) and list(values) == ["energy_import_kwh"]

        await dtu.stop()

        async def offline() -> bool:
            return await daemon.metric("headend_channel_offline", 'channel="dtu-0090"') == 1.0

        await wait_until(offline, 30, "the DTU's channel offline")
        late = await create_read_request(desk, meter_id, "61", expires_in_s=2.0)

        async def ended() -> bool:
            found = await get_request(desk, late)
            return found is not None and found.final

        await wait_until(ended, 30, "the request for the disconnected DTU to end")
        found = await get_request(desk, late)
        assert found is not None and (found.state, found.reason) == (
            "expired",
            "channel dtu-0090's device is not connected (the request waited for it until it expired)",
        )
    finally:
        await desk.close()
        await daemon.close()
        await asyncio.gather(dtu.stop(), return_exceptions=True)
