"""``headend run`` with ``[listen]`` as a real process: a held DTU is listed as pending, adopted by an
inventory import without a restart, and reported online in /metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu
from tests.engine.test_daemon_process import wait_for_log
from tests.support import cli
from tests.support.cli import cli_env, headend
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def metric(port: int, sample: str) -> float | None:
    """The value of one sample (name with its labels, as printed) on /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


async def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``check`` holds, run in a thread (it may run a CLI or read /metrics)."""
    await wait_until(lambda: asyncio.to_thread(check), timeout, "the condition", interval=0.2)


async def test_daemon_holds_an_unknown_dtu_then_binds_it_once_adopted(pg_dsn: str, tmp_path: Path) -> None:
    listen_port, metrics_port = free_port(), free_port()
    config = tmp_path / "headend.toml"
    config.write_text(
        f'[database]\ndsn = "{pg_dsn}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[polling]\ninterval = "1h"\noffset = "1s"\ninventory_reload = "300ms"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
        '[listen]\nunknown = "hold"\npending_flush = "200ms"\n'
        f'[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\nheartbeat = "HB"\n'
    )
    proc = cli.start("run", "--config", str(config), env=cli_env(HEADEND_STATE_DIR=str(tmp_path / "state")))
    bus = SimBus(BusSpec(meters=1, seed=90, transport="carried"))
    dtu = SimDtu(DtuSpec("DTU-ADOPT", "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.2), bus)
    try:
        assert proc.stderr is not None
        await asyncio.to_thread(wait_for_log, proc.stderr, lambda r: r["msg"] == "engine started")
        await dtu.start()

        def pending() -> list[dict[str, object]]:
            result = headend("channels", "pending", "--json", "--dsn", pg_dsn)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        await eventually(lambda: [p["status"] for p in pending()] == ["held"])
        assert dtu.counts["connects"] == 1  # the held connection stays up: the DTU did not redial

        inventory = tmp_path / "inv.toml"
        inventory.write_text(
            '[[channels]]\nname = "village"\nurl = "dtu://DTU-ADOPT?baud=2400"\n'
            '[[meters]]\nchannel = "village"\nprotocol = "dlt645-2007"\n'
            f'address = "{bus.meters[0].address}"\nmodel = "dlt645-generic"\n'
        )
        imported = import_inventory_cli(pg_dsn, inventory)
        assert imported.returncode == 0, imported.stderr
        await eventually(lambda: pending() == [])
        await eventually(lambda: metric(metrics_port, 'headend_channel_offline{channel="village"}') == 0.0)
        assert metric(metrics_port, 'headend_dialin_events{event="held"}') == 1.0
        assert dtu.counts["connects"] == 1  # adopted on the same connection

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await dtu.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
