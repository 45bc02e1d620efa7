"""A database that hangs (its processes stopped with SIGSTOP, not shut down): every write has a
deadline, so readings and the daemon's other records go to the spool in bounded time, survive a
killed writer, and are replayed once, in order, when the server runs again."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store.embedded import EmbeddedPostgres
from headend.store.records import CommEventRecord, CycleRecord, MeterEventsRecord
from headend.store.writer import ReadingWriter
from tests.store import writer_child
from tests.store.test_outage import REPO, cluster, outage_dsn, stored_keys

__all__ = ["cluster", "outage_dsn"]  # the private cluster and its fresh database, shared fixtures

T0 = datetime(2026, 4, 6, tzinfo=UTC)
DEADLINE_S = 1.0 + 2 * 1.0  # connect_timeout + 2 x command_timeout


def server_pids(pg: EmbeddedPostgres) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def hung(pg: EmbeddedPostgres) -> Iterator[None]:
    """The server's processes stopped (connections stay open, nothing answers), then resumed."""
    pids = server_pids(pg)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def add_meter(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id) VALUES ('dlt645-2007', '1', 'm', $1)"
            " RETURNING id",
            channel,
        )
        return channel, meter
    finally:
        await conn.close()


@pytest.mark.timeout(120)
async def test_hung_server_spools_readings_and_records_in_bounded_time_and_replays_them_once(
    cluster: EmbeddedPostgres, outage_dsn: str, tmp_path: Path
) -> None:
    channel, meter = await add_meter(outage_dsn)
    spool = tmp_path / "spool"
    writer = ReadingWriter(
        outage_dsn, spool_dir=spool, retry_interval=0.2, connect_timeout=1.0, command_timeout=1.0
    )
    await writer.start()
    await writer.submit(writer_child.batch(0))  # the lanes hold open connections when the server hangs
    cycle = CycleRecord(channel, T0, 1, 1, 1, T0, T0 + timedelta(seconds=3), 0.01)
    clock = CommEventRecord("clock_corrected", meter, channel, T0, '{"drift_s": 42}')
    power = MeterEventsRecord(meter, (("power_down", meter, channel, T0, None, "{}"),))
    with hung(cluster):
        started = time.monotonic()
        await asyncio.wait_for(writer.submit(writer_child.batch(1)), 4 * DEADLINE_S)
        for record in (cycle, clock, power):
            await asyncio.wait_for(writer.submit_record(record), 4 * DEADLINE_S)
        await asyncio.wait_for(writer.submit(writer_child.batch(2)), 4 * DEADLINE_S)
        elapsed = time.monotonic() - started
        assert writer.mode == "spooling"
        assert writer.spooled == 200 and writer.records_spooled == 3
        # one deadline for the first write that hangs; everything after it goes straight to the spool
        assert elapsed < DEADLINE_S + 2.0, f"spooling took {elapsed:.1f} s"
        copy = tmp_path / "spool-copy"
        shutil.copytree(spool, copy, ignore=shutil.ignore_patterns("spool.lock"))
    await asyncio.wait_for(writer.wait_replayed(), 60)
    await writer.close()
    assert writer.replayed == 200 and writer.records_replayed == 3

    # replaying the same spool again (a crash before its segment was removed) stores nothing twice
    again = ReadingWriter(outage_dsn, spool_dir=copy, retry_interval=0.2)
    await again.start()
    await asyncio.wait_for(again.wait_replayed(), 60)
    await again.close()
    assert again.records_replayed == 3

    expected = sorted((r.meter_id, r.ts, r.value) for n in range(3) for r in writer_child.batch(n))
    assert await stored_keys(outage_dsn) == expected
    conn = await asyncpg.connect(outage_dsn)
    try:
        cycles = await conn.fetch("SELECT channel_id, cycle_at, due, succeeded FROM read_cycles")
        assert [tuple(r) for r in cycles] == [(channel, T0, 1, 1)]
        events = await conn.fetch("SELECT category, kind, details FROM events ORDER BY category")
        assert [(r["category"], r["kind"]) for r in events] == [
            ("comm", "clock_corrected"),
            ("meter", "power_down"),
        ]
    finally:
        await conn.close()


@pytest.mark.timeout(120)
async def test_writer_killed_while_the_server_hangs_loses_nothing_acknowledged(
    cluster: EmbeddedPostgres, outage_dsn: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.writer_child", outage_dsn, str(spool_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acked: list[int] = []

    async def read_acks(until: int) -> None:
        while len(acked) < until:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
            assert line.startswith("ACK "), line
            acked.append(int(line.split()[1]))

    try:
        await read_acks(20)
        with hung(cluster):
            await read_acks(40)  # acknowledged while the server hangs: spooled, not held in a connection
            child.send_signal(signal.SIGKILL)
            child.wait()
    finally:
        child.kill()
        child.wait()
    assert any(spool_dir.glob("*.seg")), "the child should have spooled while the server hung"

    writer = ReadingWriter(outage_dsn, spool_dir=spool_dir, retry_interval=0.2)
    await writer.start()
    await asyncio.wait_for(writer.wait_replayed(), 60)
    await writer.close()
    stored = {(m, ts) for m, ts, _ in await stored_keys(outage_dsn)}
    for n in acked:
        assert all((r.meter_id, r.ts) in stored for r in writer_child.batch(n)), f"batch {n} lost"
