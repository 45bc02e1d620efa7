"""Checking meters' time-of-use schedules against their tariffs (``headend params check``).

The daemon reads back a meter's *active* set (status word 3 tells which): every item the set its
tariff implies names (:func:`read_schedule`, reads only, no password). The comparison
(:func:`compare`) is made when reported, against the tariff's set then, so a read-back stays
useful after a tariff revision as long as it holds the items asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headend.drivers.base import MeterDriver, MeterRefused
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.gdw1376 import ConcentratorMeterDriver
from headend.params.tou import TouSet, comparable, item_diff
from protocols.dlt645 import lookup

STATUS_WORD_3 = "04000503"


class CheckError(Exception):
    """The meter cannot be checked (one line, the reason)."""


def _json_ready(value: Any) -> Any:
    """A value as the read-back stores it (dates as ISO text)."""
    return json.loads(json.dumps(value, default=str))


async def read_schedule(driver: MeterDriver, expected: TouSet) -> tuple[int, dict[str, Any]]:
    """The active set's number and DI -> value (JSON-ready) of every item ``expected`` names in it."""
    if isinstance(driver, ConcentratorMeterDriver):
        driver = driver.forwarded
    if not isinstance(driver, Dlt645Driver) or driver.edition != 2007:
        raise CheckError("only DL/T 645-2007 meters keep time-of-use parameters")
    status = await driver.read_di(STATUS_WORD_3)
    active = 2 if status["time_slot_table_2"] else 1
    items: dict[str, Any] = {}
    for di in expected.meter_items(active):
        try:
            value = await driver.read_di(di)
        except MeterRefused as exc:
            if exc.flags != ["no_data"]:
                raise
            value = None
        items[di] = _json_ready(comparable(di, value))
    return active, items


@dataclass(frozen=True, slots=True)
class Verdict:
    """A meter's schedule against its tariff's: ``matches``, ``differs`` (the item names),
    ``not read`` (no read-back holding every item) or ``error`` (why it could not be read)."""

    state: str
    detail: str = ""


def compare(expected: TouSet, active_set: int | None, items: Mapping[str, Any] | None) -> Verdict:
    """The verdict for a read-back of the active set (None: never read)."""
    if active_set is None or items is None:
        return Verdict("not read")
    wanted = {di: _json_ready(v) for di, v in expected.meter_items(active_set).items()}
    missing = [di for di in wanted if di not in items]
    if missing:
        return Verdict("not read", f"the last read-back lacks {len(missing)} items")
    differs = item_diff(items, wanted)
    if not differs:
        return Verdict("matches")
    names = [f"{di} {item.name}" if (item := lookup(di)) else di for di in sorted(differs)]
    return Verdict("differs", ", ".join(names))
