"""The "bus + inventory + engine" setup of in-process engine tests: simulated DL/T 645 buses written
as an inventory, imported, and an engine whose reading writer spools under the test's directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import asyncpg

from headend.concentrators.requests import run as archive_requests
from headend.concentrators.service import run as concentrator_duties
from headend.config import HeadendConfig
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.requests.duty import run as meter_requests
from headend.store.writer import ReadingWriter
from simulators import SimBus
from tests.support.logins import DAEMON_LOGIN, instead_of_superuser


def inventory_file(path: Path, buses: Mapping[str, SimBus]) -> Path:
    """A TOML inventory: one channel per bus (named by its key), every meter of it as DL/T 645-2007."""
    lines = []
    for name, bus in buses.items():
        url = bus.url + ("?parity=N" if bus.url.startswith("serial") else "")
        lines += ["[[channels]]", f'name = "{name}"', f'url = "{url}"', ""]
        for meter in bus.meters:
            lines += [
                "[[meters]]",
                f'channel = "{name}"',
                'protocol = "dlt645-2007"',
                f'address = "{meter.address}"',
                'model = "dlt645-generic"',
                "",
            ]
    path.write_text("\n".join(lines))
    return path


async def import_buses(conn: asyncpg.Connection, path: Path, buses: Mapping[str, SimBus]) -> None:
    """Write :func:`inventory_file` at ``path`` and import it into the database of ``conn``."""
    await import_inventory(conn, read_inventory(inventory_file(path, buses)))


def engine_for(
    config: HeadendConfig,
    dsn: str,
    tmp_path: Path,
    driver: DriverPort | None = None,
    *,
    answers_requests: bool = False,
) -> Engine:
    """An engine (not started) on ``dsn`` whose writer spools to ``tmp_path/spool``, with the built-in
    duties the daemon gives it (the concentrators'; ``answers_requests``: also the meter requests',
    which holds a connection of its own); a superuser ``dsn`` runs as the daemon's login."""
    dsn = instead_of_superuser(DAEMON_LOGIN, dsn)
    writer = ReadingWriter(dsn, spool_dir=tmp_path / "spool")
    port = driver if driver is not None else DriverPort()
    duties = [concentrator_duties, archive_requests] + ([meter_requests] if answers_requests else [])
    return Engine(config, dsn, writer, port, duties=duties)
