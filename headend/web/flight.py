"""Single flight: callers asking for the same key while its value is being computed share that one
computation instead of starting their own; a caller arriving after it finished starts a new one (no
value is kept)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """At most one computation in flight per key, in this process. The computation runs in a task of
    its own: a caller that gives up (a client that goes away) does not cancel it for the others."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, compute: Callable[[], Coroutine[object, None, V]]) -> V:
        """The value of the computation for ``key`` in flight, or of ``compute()`` started now. Every
        caller sharing it gets its value or its exception."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(compute())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: all its callers may have given up
