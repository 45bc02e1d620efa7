"""A writer process whose spool's disk fills up, for the full-disk test: the process may not grow a
file beyond LIMIT bytes (RLIMIT_FSIZE, so every spool append beyond it fails with EFBIG as a full
disk would with ENOSPC). It submits INTERVALS intervals of 10 meters one after the other (each
answered, held or refused before the next), prints ``ACK i`` or ``REFUSED i`` for each, ``HELD n``
(readings held in memory after the last submission) and ``CLOSED`` once the writer closed.

Usage: python -m tests.store.disk_full_child DSN SPOOL_DIR LIMIT INTERVALS HOLD_READINGS
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from headend.store.spool import SpoolFullError
from headend.store.writer import Reading, ReadingWriter

T0 = datetime(2026, 4, 6, tzinfo=UTC)
METERS = range(1, 11)


def interval(i: int) -> list[Reading]:
    ts = T0 + timedelta(minutes=15 * i)
    return [Reading(m, "energy_import_kwh", ts, float(1000 * m + i)) for m in METERS]


async def submit(writer: ReadingWriter, i: int) -> None:
    try:
        await writer.submit(interval(i))
    except SpoolFullError:
        print(f"REFUSED {i}", flush=True)
    else:
        print(f"ACK {i}", flush=True)


async def main(dsn: str, spool_dir: Path, intervals: int, hold_readings: int) -> None:
    writer = ReadingWriter(
        dsn,
        spool_dir=spool_dir,
        hold_readings=hold_readings,
        retry_interval=0.1,
        connect_timeout=1.0,
        command_timeout=1.0,
    )
    await writer.start()
    tasks = []
    for i in range(intervals):  # one interval after the other: each is answered, held or refused
        held = writer.held
        tasks.append(asyncio.create_task(submit(writer, i)))
        while not tasks[-1].done() and writer.held == held:
            await asyncio.sleep(0.005)
    print(f"HELD {writer.held} FULL {int(writer.spool_full)}", flush=True)
    await asyncio.gather(*tasks)
    await writer.close()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])))
