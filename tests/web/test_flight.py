"""``SingleFlight``: callers asking for a key while its computation runs share it (its value or its
exception), one that gives up does not stop it for the others, and a caller after it landed starts a
new one (nothing is kept)."""

from __future__ import annotations

import asyncio

import pytest

from headend.web.flight import SingleFlight


class Gate:
    """A computation that counts its runs and lands when released."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail = False

    async def compute(self) -> int:
        self.runs += 1
        run = self.runs
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"run {run} failed")
        return run


async def _started(gate: Gate, runs: int) -> None:
    while gate.runs < runs:
        await asyncio.sleep(0)


async def test_callers_in_flight_share_one_computation_and_later_ones_start_anew() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = Gate()
    first = [asyncio.create_task(flight.run("today", gate.compute)) for _ in range(5)]
    other_key = asyncio.create_task(flight.run("yesterday", gate.compute))
    await asyncio.wait_for(_started(gate, 2), 5)
    late = asyncio.create_task(flight.run("today", gate.compute))  # still in flight: shares it
    gate.release.set()
    assert await asyncio.gather(*first, late) == [1] * 6
    assert await other_key == 2
    assert await flight.run("today", gate.compute) == 3  # landed: a new computation
    assert gate.runs == 3


async def test_a_failure_reaches_every_caller_and_one_giving_up_stops_nobody_else() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = Gate()
    leaving, staying = (asyncio.create_task(flight.run("today", gate.compute)) for _ in range(2))
    await asyncio.wait_for(_started(gate, 1), 5)
    leaving.cancel()  # a client that went away
    with pytest.raises(asyncio.CancelledError):
        await leaving
    gate.release.set()
    assert await staying == 1
    gate.fail = True
    failing = [asyncio.create_task(flight.run("today", gate.compute)) for _ in range(3)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [str(r) for r in results] == ["run 2 failed"] * 3
    gate.fail = False
    assert await flight.run("today", gate.compute) == 3
