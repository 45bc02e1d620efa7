"""A spool whose disk fills up while the database is down: said once, the readings the disk refuses
wait in a bounded buffer in memory, unacknowledged, and are stored when the database returns; only
what exceeds that bound is refused (said once too). No tracebacks, nothing stored twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import asyncpg
import pytest

from headend.store.spool import encode_entry
from tests.engine.test_database_outage import tcp_dsn
from tests.store import disk_full_child
from tests.support.daemons import SwitchableDatabase, eventually

REPO = Path(__file__).resolve().parents[2]
LIMIT = 4096  # bytes a spool segment may reach: room for the first FITTING intervals


def fitting() -> int:
    """How many intervals the spool takes before its (one) segment reaches LIMIT."""
    size, count = 0, 0
    while size + len(encode_entry(disk_full_child.interval(count))) <= LIMIT:
        size += len(encode_entry(disk_full_child.interval(count)))
        count += 1
    return count


class Child:
    """The child writer process with its output lines collected."""

    def __init__(self, dsn: str, spool_dir: Path, intervals: int, hold_readings: int) -> None:
        args = [dsn, str(spool_dir), str(LIMIT), str(intervals), str(hold_readings)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store.disk_full_child", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            lines.append(line.rstrip("\n"))

    def said(self, prefix: str) -> list[str]:
        return [line for line in self.out if line.startswith(prefix)]


async def stored(dsn: str) -> list[tuple[int, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT meter_id, value FROM readings ORDER BY meter_id, ts")
        return [(r["meter_id"], r["value"]) for r in rows]
    finally:
        await conn.close()


def expected(intervals: list[int]) -> list[tuple[int, float]]:
    return sorted((r.meter_id, r.value) for i in intervals for r in disk_full_child.interval(i))


@pytest.mark.timeout(120)
async def test_full_spool_disk_holds_readings_in_memory_and_stores_all_when_the_database_returns(
    pg_dsn: str, tmp_path: Path
) -> None:
    socket_path = tcp_dsn(pg_dsn, 0)[0]
    database = SwitchableDatabase(socket_path)  # down: nothing listens on its port yet
    child = Child(tcp_dsn(pg_dsn, database.port)[1], tmp_path / "spool", 9, 1_000)
    try:
        await eventually(lambda: asyncio.sleep(0, bool(child.said("HELD"))), 30, "the disk to fill")
        assert 0 < fitting() < 9
        assert child.said("HELD") == [f"HELD {10 * (9 - fitting())} FULL 1"]
        # what the disk took is acknowledged, what it refused waits unacknowledged
        assert sorted(int(line.split()[1]) for line in child.said("ACK")) == list(range(fitting()))
        await database.up()
        await eventually(lambda: asyncio.sleep(0, child.said("CLOSED") != []), 60, "the writer to close")
    finally:
        await database.down()
        child.process.kill()
        child.process.wait()
    assert sorted(int(line.split()[1]) for line in child.said("ACK")) == list(range(9))
    assert child.said("REFUSED") == []
    assert await stored(pg_dsn) == expected(list(range(9)))
    assert len([line for line in child.err if "disk refuses writes" in line]) == 1, child.err
    assert not [line for line in child.err if "Traceback" in line], child.err


@pytest.mark.timeout(120)
async def test_beyond_the_memory_bound_readings_are_refused_and_said_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    socket_path = tcp_dsn(pg_dsn, 0)[0]
    database = SwitchableDatabase(socket_path)
    child = Child(tcp_dsn(pg_dsn, database.port)[1], tmp_path / "spool", 12, 20)
    try:
        await eventually(lambda: asyncio.sleep(0, bool(child.said("HELD"))), 30, "the disk to fill")
        assert child.said("HELD") == ["HELD 20 FULL 1"]
        await database.up()
        await eventually(lambda: asyncio.sleep(0, child.said("CLOSED") != []), 60, "the writer to close")
    finally:
        await database.down()
        child.process.kill()
        child.process.wait()
    taken = fitting() + 2  # the spool's, then two intervals (20 readings, the bound) in memory
    assert sorted(int(line.split()[1]) for line in child.said("ACK")) == list(range(taken))
    assert sorted(int(line.split()[1]) for line in child.said("REFUSED")) == list(range(taken, 12))
    assert await stored(pg_dsn) == expected(list(range(taken)))  # every acknowledged interval only
    assert len([line for line in child.err if "held in memory (the bound)" in line]) == 1, child.err
    assert len([line for line in child.err if "disk refuses writes" in line]) == 1, child.err
    assert not [line for line in child.err if "Traceback" in line], child.err
