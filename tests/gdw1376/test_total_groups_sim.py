"""Total groups (总加组) of the concentrator simulator through a real TCP socket: the AFN 04 F14
configuration set and read back over AFN 0A F14, and the total-group curves F73..F76 following the
members' load model."""

from __future__ import annotations

import math

import pytest

from protocols.gdw1376 import ALL_DENIED, Afn, CurveRequest, GroupMember, TotalGroup, unit
from protocols.gdw1376.formats import A2
from tests.gdw1376.test_concentrator_sim import running

pytestmark = pytest.mark.timeout(60)

GROUP = TotalGroup(2, (GroupMember(1), GroupMember(2), GroupMember(3, subtract=True)))


async def test_configuration_is_set_over_afn04_and_read_back_over_afn0a() -> None:
    start = (TotalGroup(1, (GroupMember(4), GroupMember(5, reverse=True))),)
    async with running(total_groups=start) as (sim, _master, connection):
        (read,) = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 14)])
        assert read.value(14) == start
        (ok,) = await connection.ask(Afn.SET_PARAMETERS, [unit(0, 14, (GROUP,))])
        assert ok.afn == Afn.CONFIRM and ok.value(1) is None
        (read,) = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 14)])
        assert read.value(14) == (start[0], GROUP)
        # a group without members removes it; a number out of 1..8 is denied and changes nothing
        await connection.ask(Afn.SET_PARAMETERS, [unit(0, 14, (TotalGroup(1, ()),))])
        (denied,) = await connection.ask(Afn.SET_PARAMETERS, [unit(0, 14, (TotalGroup(9, GROUP.members),))])
        assert next(denied.items())[1] == ALL_DENIED
        (read,) = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 14)])
        assert read.value(14) == (GROUP,)
        assert sim.describe()["total_groups"] == [{"number": 2, "members": [1, 2, 3]}]


async def test_group_curves_follow_the_members_load_profiles() -> None:
    async with running(total_groups=(GROUP,), history_days=1) as (sim, _master, connection):
        profiles = [{r.time: r for r in m.model.profile} for m in sim.pool.meters[:3]]
        times = sorted(set(profiles[0]) & set(profiles[1]) & set(profiles[2]))[-9:]
        asked = CurveRequest(times[1], 1, 8)
        frames = await connection.ask(
            Afn.CLASS2_DATA, [unit(2, (73, 74, 75, 76), *(asked,) * 4), unit(1, 73, asked)]
        )
    curves = {fn: c for f in frames for pn, fn, c in f.items() if pn == 2}
    assert {pn for f in frames for pn, _fn, _c in f.items()} == {2}  # group 1 is not configured
    for index, at in enumerate(times[1:]):
        records = [p[at] for p in profiles]
        before = [p[times[index]] for p in profiles]
        for fn, name in ((73, "power_kw"), (74, "reactive_power_kvar")):
            p1, p2, p3 = (max(r.curves[name], 0.0) for r in records)
            assert curves[fn].values[index] == A2.value_of(A2.bytes_of(round(p1 + p2 - p3, 4))), (fn, at)

        def register(rs: list, fn: int) -> float:
            values = [r.import_kwh for r in rs] if fn == 75 else [r.q1 + r.q2 for r in rs]
            return math.floor(round(values[0] + values[1] - values[2], 4))

        for fn in (75, 76):
            assert curves[fn].values[index] == register(records, fn) - register(before, fn), (fn, at)
    assert sim.counts["curve_F73"] == 2  # group 2 and the unconfigured group 1
