"""``headend run`` through a database outage, as a real process: it starts while the database is
unreachable, reads its meters from the cached inventory into the spool, says so once, and catches
up when the database returns."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from simulators import BusSpec, start_bus
from tests.support.daemons import Daemon, SwitchableDatabase, free_port
from tests.support.waiting import wait_until

METERS = 4


def tcp_dsn(unix_dsn: str, port: int) -> tuple[str, str]:
    """(socket path of ``unix_dsn``, the same database over TCP on ``port``)."""
    parts = urlsplit(unix_dsn)
    query = parse_qs(parts.query)
    socket_path = f"{query['host'][0]}/.s.PGSQL.{query['port'][0]}"
    return socket_path, f"postgresql://{parts.username}@127.0.0.1:{port}{parts.path}"


def write_config(path: Path, dsn: str, spool: Path, metrics_port: int) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{spool}"\n'
        '[polling]\ninterval = "2s"\noffset = "0s"\ninventory_reload = "1s"\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        '[ha]\npoll = "1s"\ncheck = "500ms"\ncheck_timeout = "2s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return path


@pytest.mark.timeout(180)
@pytest.mark.long(seconds=30)
async def test_run_starts_without_the_database_spools_and_catches_up_with_one_line_per_change(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=METERS, seed=21))
    socket_path = tcp_dsn(pg_dsn, 0)[0]
    database = SwitchableDatabase(socket_path)
    dsn = tcp_dsn(pg_dsn, database.port)[1]
    await database.up()
    conn = await asyncpg.connect(pg_dsn)
    lines = ["[[channels]]", 'name = "bus-1"', f'url = "{bus.url}"', ""]
    for meter in bus.meters:
        lines += ["[[meters]]", 'channel = "bus-1"', 'protocol = "dlt645-2007"']
        lines += [f'address = "{meter.address}"', 'model = "dlt645-generic"', ""]
    inventory = tmp_path / "inv.toml"
    inventory.write_text("\n".join(lines))
    metrics_port = free_port()
    config = write_config(tmp_path / "headend.toml", dsn, tmp_path / "spool", metrics_port)
    daemons: list[Daemon] = []
    try:
        from headend.inventory import import_inventory, read_inventory

        await import_inventory(conn, read_inventory(inventory))
        # a first run while the database answers: it caches the inventory
        first = await Daemon.start(config, tmp_path / "state", metrics_port)
        daemons.append(first)
        await first.wait_logged("inventory loaded")
        first.proc.send_signal(signal.SIGTERM)
        assert await first.proc.wait() == 0
        cycles_before = await conn.fetchval("SELECT count(*) FROM read_cycles")
        stamps_before = await conn.fetchval("SELECT count(DISTINCT ts) FROM readings")

        await database.down()
        daemon = await Daemon.start(config, tmp_path / "state", metrics_port)
        daemons.append(daemon)
        await daemon.wait_logged("database unreachable; retrying with backoff")
        await daemon.wait_logged("database unreachable; reading the meters of the cached inventory")
        await daemon.wait_logged("engine started")
        polls_before = bus.requests[0x11]

        async def spooled_cycles() -> bool:
            return bus.requests[0x11] >= polls_before + 4 * METERS and any((tmp_path / "spool").glob("*.seg"))

        await wait_until(spooled_cycles, 60, "meters read into the spool during the outage")
        assert await daemon.metric("headend_daemon_active") == 1.0  # reading alone, through the outage
        # nothing reached the database: all of it is in the spool
        assert await conn.fetchval("SELECT count(*) FROM read_cycles") == cycles_before

        await database.up()
        await daemon.wait_logged("active:", timeout=60)
        await daemon.wait_logged("spool replayed", timeout=60)

        async def caught_up() -> bool:
            cycles = await conn.fetchval("SELECT count(*) FROM read_cycles WHERE succeeded = $1", METERS)
            stamps = await conn.fetchval("SELECT count(DISTINCT ts) FROM readings WHERE quality = 'actual'")
            return cycles >= cycles_before + 4 and stamps >= stamps_before + 4

        await wait_until(caught_up, 30, "the outage's readings and cycle statistics in the database")

        # a second outage while it runs: the lock connection and the writer's connections are cut
        stamps_mid = await conn.fetchval("SELECT count(DISTINCT ts) FROM readings WHERE quality = 'actual'")
        await database.down()
        await daemon.wait_logged("database lock lost", timeout=30)
        await daemon.wait_logged("database unavailable", timeout=30, count=2)
        polls_mid = bus.requests[0x11]

        async def reading_on() -> bool:
            return bus.requests[0x11] >= polls_mid + 3 * METERS

        await wait_until(reading_on, 30, "meters read through the second outage")
        await database.up()
        await daemon.wait_logged("spool replayed", timeout=60, count=2)
        await daemon.wait_logged("active:", timeout=60, count=2)

        async def caught_up_again() -> bool:
            stamps = await conn.fetchval("SELECT count(DISTINCT ts) FROM readings WHERE quality = 'actual'")
            return stamps >= stamps_mid + 3

        await wait_until(caught_up_again, 30, "the second outage's readings in the database")
        daemon.proc.send_signal(signal.SIGTERM)
        assert await daemon.proc.wait() == 0

        records = daemon.records
        assert not daemon.other_lines, daemon.other_lines[:5]  # every line is a log record
        assert [r for r in records if "exc" in r] == []  # no traceback
        # one line per change of state and outage, however many attempts and cycles it lasted
        assert len(daemon.logged("database unreachable; retrying")) == 2
        assert len(daemon.logged("database lock lost")) == 1
        assert len(daemon.logged("database unavailable")) == 2  # the writer: spooling from then on
        assert len(daemon.logged("spool replayed")) == 2
        assert len(daemon.logged("active:")) == 2
        assert [r["msg"] for r in records if "of capacity" in r["msg"]] == []
        assert [r for r in records if r["level"] in ("error", "critical")] == []
    finally:
        for daemon in daemons:
            await daemon.close()
        await database.down()
        await conn.close()
        await bus.stop()


@pytest.mark.timeout(120)
async def test_the_database_lost_while_the_schema_check_waits_is_a_lost_lock_and_recovers(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The window between taking the daemon lock and starting to poll (the schema check, which
    waits for any concurrent ``headend db migrate``): losing the database there is a lost lock too."""
    from headend.store.migrate import LOCK_KEY

    socket_path = tcp_dsn(pg_dsn, 0)[0]
    database = SwitchableDatabase(socket_path)
    dsn = tcp_dsn(pg_dsn, database.port)[1]
    await database.up()
    conn = await asyncpg.connect(pg_dsn)
    metrics_port = free_port()
    config = write_config(tmp_path / "headend.toml", dsn, tmp_path / "spool", metrics_port)
    daemon: Daemon | None = None
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)  # a migration in progress elsewhere
        daemon = await Daemon.start(config, tmp_path / "state", metrics_port)
        await daemon.wait_logged("active:")

        async def schema_check_waiting() -> bool:
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool(await conn.fetchval(waiting))

        await wait_until(schema_check_waiting, 30, "the daemon's schema check waiting for the migration lock")
        await database.down()
        lost = await daemon.wait_logged("database lock lost", timeout=30)
        assert "error" in lost
        assert daemon.logged("engine started") == []  # it never started polling in between
        await daemon.wait_logged("database unreachable; retrying with backoff", timeout=30)

        await database.up()
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        await daemon.wait_logged("active:", timeout=60, count=2)
        await daemon.wait_logged("engine started", timeout=60)
        daemon.proc.send_signal(signal.SIGTERM)
        assert await daemon.proc.wait() == 0
        assert len(daemon.logged("database lock lost")) == 1
        assert len(daemon.logged("schema check interrupted")) == 1
        assert [r for r in daemon.records if "exc" in r] == []
    finally:
        if daemon is not None:
            await daemon.close()
        await database.down()
        await conn.close()
