"""Transformer areas in the inventory: the ``[[areas]]`` tables of an inventory file, their import
(memberships moved on an effective date, never overlapping) and their export as the same TOML.

An area names its supply meter and its customer meters (``members``) by meter name or address;
``effective`` (a date, default today UTC) is when the listed membership takes effect: a listed meter
in another area moves on that date, a meter of the area no longer listed leaves it on that date.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from headend import limits
from headend.store.areas import (
    add_memberships,
    area_supplied_by,
    check_memberships,
    close_membership,
    drop_membership,
    installed_ids_by_name,
    members_on,
    move_membership,
    open_members_of,
    open_memberships,
    upsert_area,
)
from headend.store.areas import list_areas as stored_areas

MAX_RATIO = 100_000.0


class AreaEntry(BaseModel):
    """One ``[[areas]]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str
    supply_meter: str
    ct_ratio: float = 1.0
    pt_ratio: float = 1.0
    loss_limit_pct: float = Field(10.0, gt=0, le=100)
    members: list[str] = Field(default_factory=list)
    effective: date | None = None

    @field_validator("name", "supply_meter")
    @classmethod
    def _text(cls, value: str) -> str:
        return limits.name(value, "text")

    @field_validator("ct_ratio", "pt_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 < value <= MAX_RATIO:
            raise ValueError(f"must be a finite number above 0 and at most {MAX_RATIO:g}")
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, value: list[str]) -> list[str]:
        seen = set()
        for ref in value:
            limits.name(ref, "member")
            if ref in seen:
                raise ValueError(f"meter {ref!r} listed twice")
            seen.add(ref)
        return value


class AreaImportError(ValueError):
    """Areas that cannot be imported; ``str()`` is ``source: areas[i]: field: reason`` lines."""


MeterFinder = Callable[[asyncpg.Connection, str], Awaitable[tuple[int, str]]]


async def _meter_id(
    conn: asyncpg.Connection, find: MeterFinder, ref: str, known: dict[str, int]
) -> int | str:
    """The id of the meter ``ref`` names (``known``: the installed meters named by the file's
    references, looked up at once), else the reason why not."""
    if ref in known:  # what ``find`` answers for the name of an installed meter, without a query each
        return known[ref]
    try:
        meter_id, _name = await find(conn, ref)
    except ValueError as exc:
        return str(exc)
    return meter_id


async def import_areas(
    conn: asyncpg.Connection,
    areas: Sequence[AreaEntry],
    source: str,
    find: MeterFinder,
    today: date | None = None,
) -> int:
    """Upsert the areas and move their memberships (inside the caller's transaction; ``find``
    resolves a meter reference the way every command does); returns how many memberships changed.
    Raises AreaImportError listing every problem."""
    problems: list[str] = []
    claimed: dict[str, str] = {}
    supplies: dict[int, str] = {}
    changes = 0
    default_day = today or datetime.now(UTC).date()
    known = await installed_ids_by_name(conn, [ref for a in areas for ref in (a.supply_meter, *a.members)])
    for i, area in enumerate(areas):
        where = f"{source}: areas[{i}]"
        supply = await _meter_id(conn, find, area.supply_meter, known)
        if isinstance(supply, str):
            problems.append(f"{where}: supply_meter: {supply}")
            continue
        owner = supplies.get(supply) or await area_supplied_by(conn, supply)
        if owner is not None and owner != area.name:
            problems.append(f"{where}: supply_meter: {area.supply_meter!r} already supplies area {owner!r}")
        supplies[supply] = area.name
        members: list[int] = []
        for ref in area.members:
            found = await _meter_id(conn, find, ref, known)
            if isinstance(found, str):
                problems.append(f"{where}: members: {found}")
            elif found == supply:
                problems.append(f"{where}: members: {ref!r} is the area's supply meter")
            elif ref in claimed:
                problems.append(f"{where}: members: {ref!r} is also listed in area {claimed[ref]!r}")
            else:
                claimed[ref] = area.name
                members.append(found)
        if problems:
            continue
        since = area.effective or default_day
        area_id = await upsert_area(
            conn, area.name, supply, area.ct_ratio, area.pt_ratio, area.loss_limit_pct
        )
        changes += await _move_members(conn, area_id, members, since, problems, where)
    if problems:
        raise AreaImportError("\n".join(problems))
    try:
        await check_memberships(conn)
    except (asyncpg.ExclusionViolationError, asyncpg.CheckViolationError) as exc:
        raise AreaImportError(f"{source}: areas: {exc}") from None
    return changes


async def _move_members(
    conn: asyncpg.Connection, area_id: int, members: list[int], since: date, problems: list[str], where: str
) -> int:
    """Make ``members`` the area's customers from ``since`` (leavers closed, joiners moved in);
    returns how many meters joined or left."""
    current = await open_memberships(conn, members)
    leaving = {m: start for m, start in (await open_members_of(conn, area_id)).items() if m not in members}
    joining = [m for m in members if m not in current or current[m]["area_id"] != area_id]
    opening = [m for m in joining if m not in current]
    for meter_id, start in [
        *leaving.items(),
        *((m, current[m]["valid_from"]) for m in joining if m in current),
    ]:
        if start > since:
            problems.append(f"{where}: effective: meter {meter_id} changed area on {start}, after {since}")
        elif start < since:
            await close_membership(conn, meter_id, start, since)
            if meter_id in current:
                opening.append(meter_id)
        elif meter_id in current:  # joined another area the same day: a correction, no history to keep
            await move_membership(conn, meter_id, start, area_id)
        else:
            await drop_membership(conn, meter_id, start)
    await add_memberships(conn, area_id, opening, since)
    return len(leaving) + len(joining)


@dataclass(frozen=True, slots=True)
class AreaView:
    """An area as stored, with its customer meters on one day (the fields of an ``[[areas]]`` table)."""

    name: str
    supply_meter: str
    ct_ratio: float
    pt_ratio: float
    loss_limit_pct: float
    members: list[str]
    effective: date


async def area_views(conn: asyncpg.Connection, day: date, name: str | None = None) -> list[AreaView]:
    """The areas (optionally one) with their customer meters on ``day``."""
    members: dict[str, list[str]] = {}
    for row in await members_on(conn, day):
        members.setdefault(row["area"], []).append(row["meter"])
    return [
        AreaView(
            r["name"],
            r["supply_meter"],
            r["ct_ratio"],
            r["pt_ratio"],
            r["loss_limit_pct"],
            members.get(r["name"], []),
            day,
        )
        for r in await stored_areas(conn, name)
    ]


def areas_json(views: Sequence[AreaView]) -> str:
    """One JSON array of the areas (``effective`` as an ISO date)."""
    return json.dumps([asdict(v) for v in views], ensure_ascii=False, default=str)


def areas_toml(views: Sequence[AreaView]) -> str:
    """``[[areas]]`` tables that ``headend inventory import`` reads back to the same areas."""
    out = []
    for view in views:
        out.append("[[areas]]")
        for key, value in asdict(view).items():
            text = value.isoformat() if isinstance(value, date) else json.dumps(value, ensure_ascii=False)
            out.append(f"{key} = {text}")
        out.append("")
    return "\n".join(out)
