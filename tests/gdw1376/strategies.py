"""Hypothesis strategies for 1376.1 frames: every data unit kind the codec declares, in both directions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from protocols.gdw1376 import (
    Address,
    ArchiveQuery,
    ArchiveRecord,
    Control,
    Curve,
    CurveRequest,
    DailyReading,
    EnergyReading,
    EventRecords,
    EventRequest,
    ForwardReply,
    ForwardRequest,
    Frame,
    GroupMember,
    PowerEvent,
    RawData,
    RawEvent,
    Seq,
    Timeout,
    TotalGroup,
    Tp,
    Unit,
    UnitConfirmation,
)
from protocols.gdw1376.data import ARCHIVE_BAUDS, FORWARD_BAUDS, ConfirmItem
from protocols.gdw1376.fields import PW_AFNS

MINUTES = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
SECONDS = MINUTES.flatmap(lambda d: st.integers(0, 59).map(lambda s: d.replace(second=s)))
DAYS = MINUTES.map(lambda d: d.date())
A14 = st.none() | st.integers(0, 10**10 - 1).map(lambda i: i / 10**4)
A11 = st.none() | st.integers(0, 10**8 - 1).map(lambda i: i / 100)
DIGITS12 = st.text("0123456789", min_size=12, max_size=12)
BYTES = st.binary(max_size=40)

ADDRESSES = st.builds(
    Address,
    region=st.text("0123456789", min_size=4, max_size=4),
    terminal=st.integers(0, 0xFFFF),
    msa=st.integers(0, 127),
    group=st.booleans(),
)
ENERGY = st.builds(
    EnergyReading, read_at=st.none() | MINUTES, total=A14, tariffs=st.lists(A14, max_size=8).map(tuple)
)
FORWARD_REQUEST = st.builds(
    ForwardRequest,
    port=st.integers(0, 255),
    content=BYTES,
    baud=st.sampled_from(FORWARD_BAUDS),
    parity=st.sampled_from("NEO"),
    stop_bits=st.sampled_from((1, 2)),
    data_bits=st.integers(5, 8),
    frame_timeout=st.builds(Timeout, value=st.integers(0, 127), seconds=st.booleans()),
    byte_timeout_ms=st.integers(0, 255).map(lambda i: i * 10),
)
ARCHIVE_RECORD = st.builds(
    ArchiveRecord,
    serial=st.integers(0, 0xFFFF),
    pn=st.integers(0, 0xFFFF),
    port=st.integers(0, 31),
    address=DIGITS12,
    protocol=st.integers(0, 255),
    baud=st.sampled_from(ARCHIVE_BAUDS),
    password=st.binary(min_size=6, max_size=6),
    tariffs=st.integers(0, 63),
    integer_digits=st.integers(4, 7),
    decimal_digits=st.integers(1, 4),
    collector=DIGITS12,
    user_major=st.integers(0, 15),
    user_minor=st.integers(0, 15),
)
TOTAL_GROUPS = st.lists(
    st.builds(
        TotalGroup,
        number=st.integers(0, 255),
        members=st.lists(
            st.builds(GroupMember, pn=st.integers(1, 64), reverse=st.booleans(), subtract=st.booleans()),
            max_size=8,
        ).map(tuple),
    ),
    max_size=3,
).map(tuple)
EVENT = st.builds(
    PowerEvent, off=st.none() | MINUTES, on=st.none() | MINUTES, flags=st.none() | st.integers(0, 255)
) | st.builds(RawEvent, erc=st.integers(0, 255).filter(lambda e: e != 14), data=st.binary(max_size=20))


def _events(ec1: int, ec2: int, start: int, records: list[Any]) -> EventRecords:
    return EventRecords(ec1, ec2, start, (start + len(records)) % 256, tuple(records))


EVENTS = st.builds(
    _events, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.lists(EVENT, max_size=4)
)
CURVE = st.builds(
    Curve,
    start=MINUTES,
    density=st.sampled_from((1, 2, 3, 254, 255)),
    values=st.lists(A11, max_size=24).map(tuple),
)

# AFN 02 data: none, a clock, or other bytes (not 6 long: 6 bytes that form a valid A.1 are a clock)
LINK_DATA = (
    st.none() | SECONDS | st.binary(min_size=1, max_size=20).filter(lambda b: len(b) != 6).map(RawData)
)

# (afn, up) -> Fn -> strategy of one value; units may repeat a value per Pn.
VALUES: dict[tuple[int, bool], dict[int, st.SearchStrategy[Any]]] = {
    (0x04, False): {10: st.lists(ARCHIVE_RECORD, max_size=3).map(tuple), 14: TOTAL_GROUPS},
    (0x05, False): {31: SECONDS},
    (0x0A, False): {
        10: st.lists(st.integers(0, 0xFFFF), max_size=5).map(lambda s: ArchiveQuery(tuple(s))),
        14: st.none(),
    },
    (0x0A, True): {10: st.lists(ARCHIVE_RECORD, max_size=3).map(tuple), 14: TOTAL_GROUPS},
    (0x0C, False): {2: st.none(), 129: st.none()},
    (0x0C, True): {2: SECONDS, 129: ENERGY},
    (0x0D, False): {
        161: DAYS,
        **{
            fn: st.builds(
                CurveRequest, start=MINUTES, density=st.integers(0, 255), points=st.integers(0, 255)
            )
            for fn in (101, 102, 103, 104)
        },
    },
    (0x0D, True): {
        161: st.builds(DailyReading, day=DAYS, reading=ENERGY),
        **{fn: CURVE for fn in (101, 102, 103, 104)},
    },
    (0x0E, False): {
        1: st.builds(EventRequest, st.integers(0, 255), st.integers(0, 255)),
        2: st.builds(EventRequest, st.integers(0, 255), st.integers(0, 255)),
    },
    (0x0E, True): {1: EVENTS, 2: EVENTS},
    (0x10, False): {1: FORWARD_REQUEST},
    (0x10, True): {1: st.builds(ForwardReply, port=st.integers(0, 255), content=BYTES)},
    (0x00, False): {1: st.none(), 2: st.none()},
    (0x00, True): {1: st.none(), 2: st.none()},
    (0x02, True): {fn: LINK_DATA for fn in (1, 2, 3)},
}
GREEDY = {(0x02, True)}  # the unit takes the rest of the unit area: alone in its frame


@st.composite
def units_for(draw: st.DrawFn, afn: int, up: bool) -> list[Unit]:
    """One to three units of known kinds; units of multi-Pn groups where the Fn is per point."""
    table = VALUES[(afn, up)]
    units = []
    for _ in range(1 if (afn, up) in GREEDY else draw(st.integers(1, 3))):
        fn = draw(st.sampled_from(sorted(table)))
        if afn in (0x0C, 0x0D):
            group = draw(st.integers(0, 254))
            bits = draw(st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True))
            pns = tuple(sorted(group * 8 + b + 1 for b in bits))
        else:
            pns = (0,)
        units.append(Unit(pns, (fn,), tuple(draw(table[fn]) for _ in pns)))
    return units


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """A frame with typed units, consistent AUX (PW, EC, Tp) and random link fields."""
    afn, up = draw(st.sampled_from(sorted(VALUES)))
    units = draw(units_for(afn, up))
    if draw(st.booleans()) and up:
        units = [
            Unit(
                (0,), (3,), (UnitConfirmation(afn, (ConfirmItem(1, 129, True), ConfirmItem(2, 129, False))),)
            )
        ]
        afn = 0
    control = Control(
        up=up,
        prm=draw(st.booleans()),
        function=draw(st.integers(0, 15)),
        acd_fcb=draw(st.booleans()),
        fcv=draw(st.booleans()),
    )
    seq = Seq(
        draw(st.integers(0, 15)),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.booleans()),
    )
    tp = (
        Tp(
            draw(st.integers(0, 255)),
            (
                draw(st.integers(1, 31)),
                draw(st.integers(0, 23)),
                draw(st.integers(0, 59)),
                draw(st.integers(0, 59)),
            ),
            draw(st.integers(0, 255)),
        )
        if seq.tpv
        else None
    )
    return Frame(
        control=control,
        address=draw(ADDRESSES),
        afn=afn,
        seq=seq,
        units=units,
        pw=draw(st.binary(min_size=16, max_size=16)) if not up and afn in PW_AFNS else None,
        ec=(draw(st.integers(0, 255)), draw(st.integers(0, 255))) if control.acd else None,
        tp=tp,
    )


RAW_UNIT = st.builds(lambda data: Unit((0,), (200,), (RawData(data),)), st.binary(max_size=30))
