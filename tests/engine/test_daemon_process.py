"""``headend run`` as a real process: JSON logs, /metrics, inventory pickup without restart, SIGTERM."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from tests.support import cli
from tests.support.cli import cli_env
from tests.support.operators import import_inventory_cli
from tests.support.ports import free_port


def wait_for_log(stream: IO[str], predicate, timeout: float = 30.0) -> dict:
    """Read JSON log lines until one satisfies ``predicate``; fail on timeout or process exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError("daemon exited before the expected log line")
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"log line is not JSON: {line!r}") from None
        if predicate(record):
            return record
    raise AssertionError("expected log line did not appear")


def write_config(path: Path, dsn: str, spool: Path, metrics_port: int) -> None:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{spool}"\n'
        '[polling]\ninterval = "1h"\noffset = "1s"\ninventory_reload = "300ms"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )


@pytest.fixture
def daemon(pg_dsn: str, tmp_path: Path):
    port = free_port()
    config = tmp_path / "headend.toml"
    write_config(config, pg_dsn, tmp_path / "spool", port)
    proc = cli.start("run", "--config", str(config), env=cli_env(HEADEND_STATE_DIR=str(tmp_path / "state")))
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_daemon_serves_metrics_picks_up_inventory_and_stops_on_sigterm(
    daemon, pg_dsn: str, tmp_path: Path
) -> None:
    proc, port = daemon
    assert proc.stderr is not None
    wait_for_log(proc.stderr, lambda r: r["msg"] == "engine started")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "headend_writer_lag_seconds" in body and "headend_spool_bytes" in body

    inv = tmp_path / "inv.toml"
    inv.write_text(
        '[[channels]]\nname = "bus-9"\nurl = "tcp://127.0.0.1:9"\n'
        '[[meters]]\nchannel = "bus-9"\nprotocol = "dlt645-2007"\naddress = "42"\nmodel = "dlt645-generic"\n'
    )
    imported = import_inventory_cli(pg_dsn, inv)
    assert imported.returncode == 0, imported.stderr
    loaded = wait_for_log(proc.stderr, lambda r: r["msg"] == "inventory loaded" and r["meters"] == 1)
    assert loaded["channels"] == 1

    proc.send_signal(signal.SIGTERM)
    wait_for_log(proc.stderr, lambda r: r["msg"] == "engine stopped")
    assert proc.wait(timeout=30) == 0
