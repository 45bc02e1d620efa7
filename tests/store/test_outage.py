"""The database goes away mid-stream, and the writer process is killed: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.store.embedded import EmbeddedPostgres
from headend.store.maintenance import ensure_partitions
from headend.store.migrate import migrate
from headend.store.reading_hours import fold, hour_start
from headend.store.spool import SpoolFullError
from headend.store.writer import Reading, ReadingWriter
from tests.store import writer_child
from tests.support.postgres import throwaway_cluster, with_database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.xdist_group("outage")  # its module fixture is built once, on one worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    """A private cluster this module may stop and start at will."""
    pg, base = throwaway_cluster("headend-outage-")
    pg.start()
    yield pg
    pg.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def outage_dsn(cluster: EmbeddedPostgres, request: pytest.FixtureRequest) -> str:
    await asyncio.to_thread(cluster.start)
    name = f"outage_{request.node.name.replace('-', '_')[:40]}"
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = with_database(cluster.dsn("postgres"), name)
    await migrate(dsn)
    return dsn


async def stored_keys(dsn: str) -> list[tuple[int, object, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            tuple(r)
            for r in await conn.fetch("SELECT meter_id, ts, value FROM readings ORDER BY meter_id, ts")
        ]
    finally:
        await conn.close()


async def test_server_stopped_mid_stream_then_restarted_keeps_every_reading_once(
    cluster: EmbeddedPostgres, outage_dsn: str, tmp_path: Path
) -> None:
    writer = ReadingWriter(outage_dsn, spool_dir=tmp_path / "spool", retry_interval=0.2, connect_timeout=1.0)
    await writer.start()
    submitted: list[Reading] = []

    async def produce() -> None:
        for n in range(300):
            batch = writer_child.batch(n)
            await writer.submit(batch)
            submitted.extend(batch)
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    await wait_until(lambda: writer.written >= 3_000)
    await asyncio.to_thread(cluster.stop, "fast")
    await wait_until(lambda: writer.spooled >= 3_000)
    assert writer.mode == "spooling" and writer.spool_bytes > 0
    await asyncio.to_thread(cluster.start)
    await producer
    await writer.flush()
    await asyncio.wait_for(writer.wait_replayed(), 30)
    await writer.close()

    expected = sorted((r.meter_id, r.ts, r.value) for r in submitted)
    assert len(expected) == 30_000
    assert await stored_keys(outage_dsn) == expected
    assert writer.replayed == writer.spooled
    assert writer.written == 30_000 and writer.spool_bytes == 0


async def test_killed_writer_loses_nothing_acknowledged(
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
    try:
        for phase_end, action in ((20, lambda: cluster.stop("fast")), (60, None)):
            while len(acked) < phase_end:
                line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
                assert line.startswith("ACK "), line
                acked.append(int(line.split()[1]))
            if action is not None:
                await asyncio.to_thread(action)
        child.send_signal(signal.SIGKILL)  # mid-stream, possibly mid-append
    finally:
        child.kill()
        child.wait()
    assert any(spool_dir.glob("*.seg")), "the child should have spooled while the server was down"

    await asyncio.to_thread(cluster.start)
    writer = ReadingWriter(outage_dsn, spool_dir=spool_dir, retry_interval=0.2)
    await writer.start()
    await asyncio.wait_for(writer.wait_replayed(), 30)
    await writer.close()

    stored = await stored_keys(outage_dsn)
    stored_set = {(m, ts) for m, ts, _ in stored}
    assert len(stored_set) == len(stored)  # never a duplicate
    for n in acked:
        assert all((r.meter_id, r.ts) in stored_set for r in writer_child.batch(n)), f"batch {n} lost"
    # Nothing unacknowledged beyond the one batch in flight when the kill landed.
    assert len(stored) <= (len(acked) + 1) * len(writer_child.METERS)


async def test_full_spool_refuses_and_raises_the_alarm(tmp_path: Path) -> None:
    unreachable = f"postgresql://postgres@/headend?host={tmp_path / 'no-server'}&port=5432"
    writer = ReadingWriter(
        unreachable, spool_dir=tmp_path / "spool", spool_max_bytes=20_000, hold_readings=0, retry_interval=10
    )  # no memory buffer: what the spool refuses is refused at once
    await writer.start()
    await writer.submit(writer_child.batch(0))  # ~6 kB: fits
    await writer.submit(writer_child.batch(1))
    with pytest.raises(SpoolFullError, match=r"spool full and 0 readings held in memory"):
        for n in range(2, 10):
            await writer.submit(writer_child.batch(n))
    assert writer.spool_full and writer.rejected == 100
    assert writer.spooled >= 200 and writer.spool_bytes <= 20_000
    await writer.close()


async def test_the_rules_summary_emptied_by_a_crash_is_summarised_again_at_the_next_fold(
    cluster: EmbeddedPostgres, outage_dsn: str
) -> None:
    """The hourly summary, its blocks and what they say is kept are unlogged (migration 0088): the
    server's crash recovery empties all three; the next fold gives back the same summary."""
    day = datetime(2026, 6, 10, tzinfo=UTC)
    now = day + timedelta(hours=20, seconds=40)
    conn = await asyncpg.connect(outage_dsn)
    try:
        await conn.execute("SET synchronous_commit = on")  # as a real server: commits survive the crash
        await ensure_partitions(conn, day, day + timedelta(days=1))
        await conn.execute("INSERT INTO quantities (name) VALUES ('energy_import_kwh'), ('voltage_a_v')")
        await conn.execute("INSERT INTO reading_sources (name) VALUES ('test')")
        await conn.execute(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id)"
            " SELECT m, q.id, $1::timestamptz + i * interval '15 minutes',"
            " m * 100 + i * 0.5 - (i = 40)::int * 3,"
            " (SELECT id FROM reading_sources)"
            " FROM generate_series(1, 3) m, generate_series(0, 80) i, quantities q",
            day,
        )
        await fold(conn, hour_start(day), now)
        hours, blocks = await _summary(conn, "reading_hours"), await _summary(conn, "reading_blocks")
        assert len(hours) == 3 * 2 * 20 and len(blocks) == 3 * 2 * 3
    finally:
        await conn.close()

    await asyncio.to_thread(cluster.stop, "immediate")
    await asyncio.to_thread(cluster.start)
    conn = await asyncpg.connect(outage_dsn)
    try:
        for table in ("reading_hours", "reading_blocks", "reading_hours_kept"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table  # recovery emptied it
        await fold(conn, hour_start(day), now)
        assert await _summary(conn, "reading_hours") == hours
        assert await _summary(conn, "reading_blocks") == blocks
        assert await conn.fetchval("SELECT count(*) FROM reading_hours_dirty") == 0
    finally:
        await conn.close()


async def _summary(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT * FROM {table} ORDER BY meter_id, quantity_id, 3")
