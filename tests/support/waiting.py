"""Waiting on a condition with a deadline: the one way tests wait (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    condition: Condition, timeout: float = 30.0, what: str = "the condition", interval: float = 0.02
) -> None:
    """Poll ``condition`` (plain or async) until it is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], bool], timeout: float = 30.0, what: str = "the condition"
) -> None:
    """:func:`wait_until` for code outside an event loop (a blocking poll)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
