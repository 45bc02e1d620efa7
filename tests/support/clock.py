"""Waiting out the default clock policy's guards (the CLI's `clock --sync` uses the defaults)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


async def wait_off_the_clock_guard(margin_s: float = 62) -> None:
    """Wait until now is ``margin_s`` away from a 15-minute boundary and not within 5 minutes of
    midnight (UTC+8), where the clock policy refuses to set clocks: at most a minute and a half, or
    ten minutes around midnight."""
    while True:
        local = datetime.now(UTC) + timedelta(hours=8)
        into = (local.minute % 15) * 60 + local.second
        near_midnight = (local.hour == 23 and local.minute >= 55) or (local.hour == 0 and local.minute < 5)
        if margin_s <= into <= 900 - margin_s and not near_midnight:
            return
        await asyncio.sleep(1)
