"""Two ``headend run`` processes on one database: one active, one hot standby; takeover and fencing."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store.spool import Spool
from simulators import BusSpec, start_bus
from tests.support.daemons import CountingRelay, Daemon, free_port
from tests.support.operators import import_inventory_cli
from tests.support.waiting import wait_until

METERS = 3
INTERVAL = timedelta(minutes=1)  # the meters' load-profile period: whole minutes
POLL_S = 1.0  # [ha] poll: how often the standby tries the lock
TAKEOVER_S = 10.0  # stated: poll + a connection attempt + engine start (1 s + 2 s + start), with margin


def write_config(
    path: Path, dsn: str, spool: Path, metrics_port: int, backfill: bool, level: str = "INFO"
) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{spool}"\n'
        '[polling]\ninterval = "1m"\noffset = "2s"\ninventory_reload = "1h"\n'
        f'[backfill]\nenabled = {str(backfill).lower()}\nlookback = "1h"\nretry_every = "1m"\n'
        "[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[ha]\npoll = "{POLL_S}s"\ncheck = "500ms"\ncheck_timeout = "2s"\nfencing = true\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\nlevel = "{level}"\n'
    )
    return path


@pytest.fixture
async def fleet(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[CountingRelay, datetime]]:
    bus = await start_bus(BusSpec(meters=METERS, seed=15, profile_period_s=60, history_days=1))
    host, port = bus.url.removeprefix("tcp://").rsplit(":", 1)
    relay = CountingRelay(host, int(port))
    await relay.start()
    installed = datetime.now(UTC).replace(second=0, microsecond=0) - 5 * INTERVAL
    lines = ["[[channels]]", 'name = "bus-1"', f'url = "{relay.url}"', ""]
    for meter in bus.meters:
        lines += [
            "[[meters]]",
            'channel = "bus-1"',
            'protocol = "dlt645-2007"',
            f'address = "{meter.address}"',
            'model = "dlt645-generic"',
            f"installed_at = {installed.isoformat().replace('+00:00', 'Z')}",
            "",
        ]
    (tmp_path / "inv.toml").write_text("\n".join(lines))
    imported = import_inventory_cli(pg_dsn, tmp_path / "inv.toml")
    assert imported.returncode == 0, imported.stderr
    try:
        yield relay, installed
    finally:
        await relay.stop()
        await bus.stop()


async def start_daemon(
    name: str, dsn: str, tmp_path: Path, backfill: bool = True, level: str = "INFO"
) -> Daemon:
    metrics_port = free_port()
    spool = tmp_path / f"spool-{name}"
    config = write_config(tmp_path / f"{name}.toml", dsn, spool, metrics_port, backfill, level)
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


async def holes(conn: asyncpg.Connection, since: datetime, upto: datetime) -> int:
    """Meter intervals in [since, upto] without an energy reading."""
    return await conn.fetchval(
        """SELECT count(*) FROM meters m
           CROSS JOIN generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS g(ts)
           WHERE NOT EXISTS (SELECT 1 FROM readings r JOIN quantities q ON q.id = r.quantity_id
                             WHERE r.meter_id = m.id AND r.ts = g.ts AND q.name = 'energy_import_kwh'
                               AND r.value IS NOT NULL)""",
        since,
        upto,
    )


@pytest.mark.timeout(240)
async def test_one_daemon_polls_the_standby_takes_over_after_kill_and_backfills_what_was_missed(
    fleet: tuple[CountingRelay, datetime], pg_dsn: str, tmp_path: Path
) -> None:
    relay, installed = fleet
    # the first daemon's host does not backfill: the meters' five intervals before their first
    # cycle are holes that only the standby's takeover (its start-up gap backfill) can fill
    first = await start_daemon("a", pg_dsn, tmp_path, backfill=False)
    second = None
    conn = await asyncpg.connect(pg_dsn)
    try:
        await first.wait_logged("active:")
        second = await start_daemon("b", pg_dsn, tmp_path)
        standby = await second.wait_logged("standby:")
        assert "headend" in standby["active_daemon"]

        async def first_cycle() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM read_cycles WHERE succeeded = $1", METERS))

        await wait_until(first_cycle, 90, "the active daemon's first read cycle")
        assert relay.opened == 1  # only the active daemon ever opened the bus
        assert await first.metric("headend_daemon_active") == 1.0
        assert await second.metric("headend_daemon_active") == 0.0
        assert await first.metric("headend_reads_total") > 0
        assert await second.metric("headend_reads_total") == 0.0
        assert len(second.logged("standby:")) == 1  # one line while waiting, not one per poll
        latest = await conn.fetchval("SELECT max(cycle_at) FROM read_cycles")
        missed = await holes(conn, installed, latest)
        assert missed >= METERS * 5

        first.kill()
        killed = time.monotonic()
        await second.wait_logged("active:", timeout=TAKEOVER_S + 5)
        took = time.monotonic() - killed
        assert took <= TAKEOVER_S, f"takeover took {took:.1f} s"

        async def second_polls() -> bool:
            return await second.metric("headend_daemon_active") == 1.0

        await wait_until(second_polls, 10, "the new active daemon's engine")

        async def no_holes() -> bool:
            return await holes(conn, installed, latest) == 0

        await wait_until(no_holes, 60, "every interval read or backfilled after the takeover")
        assert relay.opened == 2  # the new active daemon's own bus connection
        backfilled = await conn.fetchval("SELECT count(*) FROM readings WHERE quality = 'backfilled'")
        assert backfilled >= missed
    finally:
        await conn.close()
        for daemon in (first, second):
            if daemon is not None:
                await daemon.close()


@pytest.mark.timeout(120)
async def test_an_active_daemon_that_loses_its_lock_connection_stops_polling_at_once(
    fleet: tuple[CountingRelay, datetime], pg_dsn: str, tmp_path: Path
) -> None:
    relay, _installed = fleet
    first = await start_daemon("a", pg_dsn, tmp_path)
    second = None
    admin = await asyncpg.connect(pg_dsn)
    try:
        await first.wait_logged("active:")
        second = await start_daemon("b", pg_dsn, tmp_path)
        await second.wait_logged("standby:")

        async def first_on_the_bus() -> bool:
            return relay.open == 1

        await wait_until(first_on_the_bus, 30, "the active daemon's bus connection")
        terminated = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE $1) t",
            f"headend %:{first.proc.pid}",
        )
        assert terminated == 1
        lost = await first.wait_logged("database lock lost", timeout=10)
        assert lost["fencing"] is True
        await first.wait_logged("fenced:", timeout=10)

        async def exactly_one_active() -> bool:
            actives = [await d.metric("headend_daemon_active") for d in (first, second)]
            # the fenced daemon closed its bus connection; the new active one opens its own when it reads
            return sorted(actives) == [0.0, 1.0] and relay.opened - relay.open >= 1 and relay.open <= 1

        await wait_until(exactly_one_active, TAKEOVER_S + 10, "exactly one active daemon")
        await first.wait_logged("standby:", timeout=20)  # the healthy standby took over; the fenced one waits
        assert second.logged("active:")
    finally:
        await admin.close()
        for daemon in (first, second):
            if daemon is not None:
                await daemon.close()


@pytest.mark.timeout(120)
async def test_a_daemon_whose_spool_is_held_elsewhere_says_so_once_and_starts_once_it_is_free(
    fleet: tuple[CountingRelay, datetime], pg_dsn: str, tmp_path: Path
) -> None:
    relay, _installed = fleet
    holder = Spool(tmp_path / "spool-a")  # another headend process on this host holds the spool
    holder.open()
    daemon = await start_daemon("a", pg_dsn, tmp_path, level="DEBUG")
    try:
        await daemon.wait_logged("cannot start polling")
        await daemon.wait_logged("engine start refused again", count=2)  # debug lines: it kept trying
        assert len(daemon.logged("cannot start polling")) == 1
        assert relay.opened == 0 and await daemon.metric("headend_daemon_active") == 0.0
        holder.close()
        await daemon.wait_logged("engine started", timeout=30)
        assert [r for r in daemon.records if "exc" in r] == []
    finally:
        holder.close()
        await daemon.close()


@pytest.mark.timeout(120)
async def test_a_frozen_active_daemon_loses_the_lock_and_fences_itself_when_it_wakes(
    fleet: tuple[CountingRelay, datetime], pg_dsn: str, tmp_path: Path
) -> None:
    first = await start_daemon("a", pg_dsn, tmp_path)
    second = None
    try:
        await first.wait_logged("active:")
        second = await start_daemon("b", pg_dsn, tmp_path)
        await second.wait_logged("standby:")
        first.proc.send_signal(signal.SIGSTOP)  # frozen: its host still answers TCP for it
        frozen = time.monotonic()
        try:
            # the server ends the silent session after release_after(...) = 16 s here, then one poll
            await second.wait_logged("active:", timeout=40)
            took = time.monotonic() - frozen
        finally:
            first.proc.send_signal(signal.SIGCONT)
        assert took <= 16 + POLL_S + TAKEOVER_S, f"takeover took {took:.1f} s"
        await first.wait_logged("database lock lost", timeout=10)
        await first.wait_logged("fenced:", timeout=10)
        await first.wait_logged("standby:", timeout=30)
        assert await first.metric("headend_daemon_active") == 0.0
    finally:
        for daemon in (first, second):
            if daemon is not None:
                await daemon.close()
