"""The total groups (总加组) of a simulated concentrator: their configuration and their curves.

The configuration is what AFN 04 F14 set last (a group number given again replaces that group), as
AFN 0A F14 reads it back; it starts from ``ConcentratorSpec.total_groups`` (the simulator's
``--config`` file). The total-group curves AFN 0D F73..F76 (Pn = the group number) follow the
members' load profiles, summed the way the concentrator firmware gdgly/NUC97X_JS sums them: a
member's forward power counts only when it is positive, its reverse power only when negative; it is
added or subtracted; a member without a record at that point is left out (all left out: EE).

- F73 / F74 (A.2 kW / kvar): the members' active / reactive power at the point.
- F75 / F76 (A.3, whole kWh / kvarh): the group's energy of the interval ending at the point, as the
  increase of the members' signed registers (forward active or reverse active; Q1+Q2 or Q3+Q4) in
  whole units, the fraction carried to the next interval (so the points add up to the registers'
  change, as the firmware keeps each group's remainder).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from protocols.gdw1376 import Curve, CurveRequest, GroupMember, PayloadError, TotalGroup
from simulators.meter import ProfileRecord

GROUP_CURVE_FNS = (73, 74, 75, 76)
MAX_GROUPS = 8

Profiles = Callable[[int], dict[dt.datetime, ProfileRecord] | None]  # Pn -> its records by local time


class TotalGroups:
    """The total-group configuration of one concentrator and the curves it gives."""

    def __init__(self, groups: tuple[TotalGroup, ...] = ()) -> None:
        self.groups: dict[int, TotalGroup] = {}
        self.store(groups)

    def store(self, groups: tuple[TotalGroup, ...]) -> None:
        """AFN 04 F14: each group replaces the one of its number (no members: the group is removed)."""
        for group in groups:
            if not 1 <= group.number <= MAX_GROUPS:
                raise ValueError(f"total group number {group.number} not in 1..{MAX_GROUPS}")
        for group in groups:
            if group.members:
                self.groups[group.number] = group
            else:
                self.groups.pop(group.number, None)

    def configuration(self) -> tuple[TotalGroup, ...]:
        """AFN 0A F14: every configured group, by number."""
        return tuple(self.groups[n] for n in sorted(self.groups))

    def curve(self, number: int, fn: int, request: CurveRequest, profiles: Profiles) -> Curve | None:
        """Curve ``fn`` (F73..F76) of group ``number`` (None: no such group)."""
        group = self.groups.get(number)
        if group is None:
            return None
        try:
            step = request.step
        except PayloadError:
            return Curve(request.start, request.density, (None,) * request.points)
        members = [(m, profiles(m.pn) or {}) for m in group.members]
        times = [request.start + i * step for i in range(request.points)]
        if fn in (73, 74):
            values = [_power(members, at, fn) for at in times]
        else:
            values = [_energy(members, at, step, fn) for at in times]
        return Curve(request.start, request.density, tuple(values))


Members = list[tuple[GroupMember, dict[dt.datetime, ProfileRecord]]]


def _power(members: Members, at: dt.datetime, fn: int) -> float | None:
    total, seen = 0.0, False
    for member, records in members:
        record = records.get(at)
        if record is None:
            continue
        name = "power_kw" if fn == 73 else "reactive_power_kvar"
        value = record.curves.get(name)
        if value is None:
            continue
        seen = True
        flowing = -value if member.reverse else value
        if flowing > 0:
            total += -flowing if member.subtract else flowing
    return round(total, 4) if seen else None


def _register(member: GroupMember, record: ProfileRecord, fn: int) -> float:
    if fn == 75:
        value = record.export_kwh if member.reverse else record.import_kwh
    else:
        value = record.q3 + record.q4 if member.reverse else record.q1 + record.q2
    return -value if member.subtract else value


def _energy(members: Members, at: dt.datetime, step: dt.timedelta, fn: int) -> float | None:
    before = after = 0.0
    seen = False
    for member, records in members:
        first, last = records.get(at - step), records.get(at)
        if first is None or last is None:
            continue
        seen = True
        before += _register(member, first, fn)
        after += _register(member, last, fn)
    if not seen:
        return None
    return float(math.floor(round(after, 4)) - math.floor(round(before, 4)))


def parse_groups(document: dict[str, object], source: str) -> tuple[TotalGroup, ...]:
    """The ``[[total_groups]]`` of a simulator config file (``number``, ``members``: a list of Pn, or
    of tables ``{pn, reverse, subtract}``); ValueError with one line naming ``source`` otherwise."""
    raw = document.get("total_groups", [])
    unknown = set(document) - {"total_groups"}
    if unknown:
        raise ValueError(f"{source}: unknown key {sorted(unknown)[0]!r} (expected [[total_groups]])")
    if not isinstance(raw, list):
        raise ValueError(f"{source}: total_groups must be an array of tables")
    groups = []
    for index, entry in enumerate(raw, 1):
        where = f"{source}: total_groups #{index}"
        if not isinstance(entry, dict) or set(entry) - {"number", "members"}:
            raise ValueError(f"{where}: a table of number and members")
        number = entry.get("number")
        if not isinstance(number, int) or not 1 <= number <= MAX_GROUPS:
            raise ValueError(f"{where}: number must be 1..{MAX_GROUPS}")
        members = entry.get("members")
        if not isinstance(members, list) or not members:
            raise ValueError(f"{where}: members must be a non-empty list")
        groups.append(TotalGroup(number, tuple(_member(m, where) for m in members)))
    return tuple(groups)


def _member(raw: object, where: str) -> GroupMember:
    table = {"pn": raw} if isinstance(raw, int) else raw
    if not isinstance(table, dict) or set(table) - {"pn", "reverse", "subtract"}:
        raise ValueError(f"{where}: a member is a Pn or a table of pn, reverse, subtract")
    pn, reverse, subtract = table.get("pn"), table.get("reverse", False), table.get("subtract", False)
    if not isinstance(pn, int) or isinstance(pn, bool) or not 1 <= pn <= 64:
        raise ValueError(f"{where}: member pn must be 1..64")
    if not isinstance(reverse, bool) or not isinstance(subtract, bool):
        raise ValueError(f"{where}: reverse and subtract are true or false")
    return GroupMember(pn, reverse, subtract)
