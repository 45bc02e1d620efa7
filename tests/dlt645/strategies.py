"""Hypothesis strategies derived from the codec's own format declarations, and the DI catalogue."""

from __future__ import annotations

import datetime as dt
from typing import Any

from construct import Construct, GreedyRange, Renamed, Struct
from hypothesis import strategies as st

from protocols.dlt645.catalogue_2007 import FIXED_2007, FREEZE_FIELDS, FREEZE_KINDS, PROFILE_CLASSES
from protocols.dlt645.dataitems_1997 import (
    DEMAND_REGISTERS,
    ENERGY_REGISTERS,
    FIXED_1997,
    PHASE_VARIABLES,
    TARIFFS,
)
from protocols.dlt645.formats import (
    BITS_BY_BAUD,
    Ascii,
    BaudWord,
    Bcd,
    BitWord,
    Digits,
    Opaque,
    Raw,
    Timestamp,
)
from protocols.dlt645.profile import CLASS_FIELDS, ProfileRecords
from protocols.dlt645.tou import HolidayEntry, SeasonEntry, SlotEntry, Table

ADDRESSES = st.text("0123456789", min_size=12, max_size=12)
UNICAST_ADDRESSES = ADDRESSES.filter(lambda a: a != "999999999999")  # writes never go to the broadcast
PASSWORDS = st.text("0123456789", min_size=6, max_size=6)
OPERATORS = st.text("0123456789", min_size=8, max_size=8)
DATETIMES = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0))
ASCII_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.just(" "), min_size=0, max_size=40
).map(str.strip)


def bcd_values(fmt: Bcd) -> st.SearchStrategy[Any]:
    low = -(fmt.limit - 1) if fmt.signed else 0
    ints = st.integers(min_value=low, max_value=fmt.limit - 1)
    return ints.map(lambda i: i / fmt.scale) if fmt.decimals else ints


def timestamp_values(fmt: Timestamp) -> st.SearchStrategy[Any]:
    fields = fmt.fields
    if "YY" in fields and "hh" in fields:
        with_seconds = "ss" in fields
        return DATETIMES.map(lambda d: d if with_seconds else d.replace(second=0))
    if "YY" in fields:
        return DATETIMES.map(lambda d: d.date())
    if "MM" in fields:
        return st.builds(
            lambda m, d, h, mi: f"{m:02d}-{d:02d} {h:02d}:{mi:02d}",
            st.integers(1, 12),
            st.integers(1, 28),
            st.integers(0, 23),
            st.integers(0, 59),
        )
    return DATETIMES.map(lambda d: d.time())


def profile_values(fmt: ProfileRecords) -> st.SearchStrategy[Any]:
    times = DATETIMES.map(lambda d: d.replace(second=0))

    def record(classes: list[int]) -> st.SearchStrategy[dict[str, Any]]:
        fields = {"time": times}
        for cls in classes:
            fields.update({name: bcd_values(item) for name, item in CLASS_FIELDS[cls]})
        return st.fixed_dictionaries(fields)

    if fmt.cls:
        return st.lists(record([fmt.cls]), min_size=1, max_size=4)
    subsets = st.lists(st.sampled_from(sorted(CLASS_FIELDS)), unique=True, max_size=6).map(sorted)
    return st.lists(subsets.flatmap(record), min_size=1, max_size=3)


def values_for(fmt: Construct) -> st.SearchStrategy[Any]:
    """A strategy for values of a format declared in the codec (recursing through Struct/GreedyRange)."""
    if isinstance(fmt, Bcd):
        return bcd_values(fmt)
    if isinstance(fmt, Digits):
        return st.text("0123456789", min_size=2 * fmt.nbytes, max_size=2 * fmt.nbytes)
    if isinstance(fmt, Ascii):
        return ASCII_TEXT.filter(lambda s: len(s) <= fmt.nbytes)
    if isinstance(fmt, Timestamp):
        return timestamp_values(fmt)
    if isinstance(fmt, BitWord):
        return st.integers(0, (1 << (8 * fmt.nbytes)) - 1).map(
            lambda w: fmt.decode_bytes(w.to_bytes(fmt.nbytes, "little"))
        )
    if isinstance(fmt, BaudWord):
        return st.sampled_from(sorted(BITS_BY_BAUD))
    if isinstance(fmt, Raw):
        return st.binary(min_size=fmt.nbytes, max_size=fmt.nbytes)
    if isinstance(fmt, Opaque):
        return st.binary(max_size=60)
    if isinstance(fmt, ProfileRecords):
        return profile_values(fmt)
    if isinstance(fmt, SeasonEntry):
        return st.builds(
            lambda m, d, t: {"start": f"{m:02d}-{d:02d}", "table": t},
            st.integers(1, 12),
            st.integers(1, 31),
            st.integers(1, 8),
        )
    if isinstance(fmt, SlotEntry):
        return st.builds(
            lambda h, m, t: {"start": f"{h:02d}:{m:02d}", "tariff": t},
            st.integers(0, 23),
            st.integers(0, 59),
            st.integers(1, 63),
        )
    if isinstance(fmt, HolidayEntry):
        return st.fixed_dictionaries({"date": DATETIMES.map(lambda d: d.date()), "table": st.integers(1, 8)})
    if isinstance(fmt, Table):
        return st.lists(values_for(fmt.subcon), min_size=1, max_size=fmt.limit)
    if isinstance(fmt, Struct):
        return st.fixed_dictionaries({sub.name: values_for(sub.subcon) for sub in fmt.subcons})
    if isinstance(fmt, GreedyRange):
        return st.lists(values_for(fmt.subcon), min_size=1, max_size=6)
    if isinstance(fmt, Renamed):
        return values_for(fmt.subcon)
    raise TypeError(f"no strategy for {fmt!r}")


def catalogue_2007() -> list[str]:
    """Every fixed 2007 DI plus representative members of every family."""
    dis = set(FIXED_2007) | {"040005FF"}
    bases = [*range(0x00, 0x0B), *range(0x15, 0x1F), *range(0x29, 0x33), *range(0x3D, 0x47)]
    for di2 in bases:
        phase = di2 > 0x0A
        for di1 in (0x00, 0xFF) if phase else (0x00, 0x01, 0x04, 0x3F, 0xFF):
            for di0 in (0x00, 0x01, 0x0C):
                dis.add(f"00{di2:02X}{di1:02X}{di0:02X}")
                if di2 not in (0x00,):
                    dis.add(f"01{di2:02X}{di1:02X}{di0:02X}")
    for kind in ("1D", "1E"):
        dis.add(f"{kind}000001")
        for field in (1, 2, 3, 4, 5, 6, 7, 8, 0xFF):
            for occurrence in (1, 10):
                dis.add(f"{kind}00{field:02X}{occurrence:02X}")
    for freeze in FREEZE_KINDS:
        for field in FREEZE_FIELDS:
            for occurrence in (1, 62):
                dis.add(f"05{freeze:02X}{field:02X}{occurrence:02X}")
    for field in (0, 1, 2):
        dis.add(f"0504{field:02X}01")
    for cls in PROFILE_CLASSES:
        for mode in (0, 1, 2):
            dis.add(f"06{cls:02X}00{mode:02X}")
    return sorted(dis)


def catalogue_1997() -> list[str]:
    """Every fixed 1997 DI plus the energy, demand and phase-variable families."""
    dis = set(FIXED_1997)
    for head in (*ENERGY_REGISTERS, *DEMAND_REGISTERS):
        dis.update(f"{head}{low:X}" for low in TARIFFS)
    for head, (_, _, _, phases) in PHASE_VARIABLES.items():
        dis.update(f"{head}{low:X}" for low in (*phases, 0xF))
    return sorted(dis)
