"""The hand-written fast paths (readings, forwarding) agree with their construct declarations:
same bytes for generated values, same values (or both a codec error) for any input bytes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.gdw1376 import Curve, DailyReading, ForwardReply, GDW1376Error
from protocols.gdw1376.data import CODECS, Declared
from tests.gdw1376.strategies import DAYS, ENERGY, FORWARD_REQUEST, MINUTES


def _curve(scale: int, low: int, high: int) -> st.SearchStrategy[Curve]:
    point = st.none() | st.integers(low, high).map(lambda n: n / scale)
    return st.builds(Curve, MINUTES, st.integers(0, 255), st.lists(point, max_size=8).map(tuple))


FAST = {
    "energy": (CODECS[(0x0C, True, 129)], ENERGY),
    "daily": (CODECS[(0x0D, True, 161)], st.builds(DailyReading, DAYS, ENERGY)),
    "forward_request": (CODECS[(0x10, False, 1)], FORWARD_REQUEST),
    "power_curve": (CODECS[(0x0D, True, 81)], _curve(10_000, -799_999, 799_999)),
    "voltage_curve": (CODECS[(0x0D, True, 89)], _curve(10, 0, 9_999)),
    "current_curve": (CODECS[(0x0D, True, 92)], _curve(1000, -799_999, 799_999)),
    "power_factor_curve": (CODECS[(0x0D, True, 105)], _curve(10, -7_999, 7_999)),
    "energy_curve": (CODECS[(0x0D, True, 101)], _curve(100, 0, 99_999_999)),
    "forward_reply": (
        CODECS[(0x10, True, 1)],
        st.builds(ForwardReply, st.integers(0, 255), st.binary(max_size=40)),
    ),
}


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data, 0, len(data))
    except GDW1376Error as exc:
        return type(exc)


@pytest.mark.parametrize("kind", sorted(FAST))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_path_matches_the_declaration(kind: str, data: st.DataObject) -> None:
    codec, values = FAST[kind]
    assert isinstance(codec, Declared) and codec.fast is not None
    value = data.draw(values)
    encoded = codec.encode(value)
    assert encoded == codec.encode_declared(value)
    assert codec.decode(encoded + b"\x99", 0, len(encoded)) == codec.decode_declared(encoded, 0, len(encoded))
    damaged = bytearray(encoded + data.draw(st.binary(max_size=4)))
    for _ in range(data.draw(st.integers(0, 3))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    cut = bytes(damaged[: data.draw(st.integers(0, len(damaged)))])
    assert _outcome(codec.decode, cut) == _outcome(codec.decode_declared, cut)
