"""A writer process for the kill test: submits numbered batches forever, printing ``ACK n`` after each.

Usage: python -m tests.store.writer_child DSN SPOOL_DIR
Batch ``n`` holds meters 1..100, interval ``T0 + n * 15 min``, value ``n``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from headend.store.writer import Reading, ReadingWriter

T0 = datetime(2026, 4, 6, tzinfo=UTC)
METERS = range(1, 101)


def batch(n: int) -> list[Reading]:
    ts = T0 + timedelta(minutes=15 * n)
    return [Reading(m, "energy_import_kwh", ts, float(n)) for m in METERS]


async def main(dsn: str, spool_dir: Path) -> None:
    writer = ReadingWriter(
        dsn, spool_dir=spool_dir, retry_interval=0.2, connect_timeout=1.0, command_timeout=1.0
    )
    await writer.start()
    n = 0
    while True:
        await writer.submit(batch(n))
        print(f"ACK {n}", flush=True)
        n += 1
        await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
