"""AFN 0D curves and AFN 0C F25 real-time data: the formats at known bytes, every curve kind both ways
(fast path = declaration), multi-unit answers decoded completely, and where an unknown Fn stops the
decoder; ``headend decode`` shows every unit with its name, values and unit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.gdw1376 import (
    CURVE_KINDS,
    Address,
    Control,
    Curve,
    EnergyReading,
    Frame,
    GDW1376Error,
    PhaseSnapshot,
    RawData,
    Seq,
    Unit,
    decode,
    encode,
)
from protocols.gdw1376.data import CODECS, Declared
from protocols.gdw1376.formats import A2, A3, A5, A7, A9, A13, A25
from tests.support import cli

START = dt.datetime(2024, 5, 1, 0, 15)
ADDRESS = Address.parse("0314-25394")


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        (A5, "5389", -95.3),  # D7 of the second byte is the sign: -095.3 %
        (A5, "0010", 100.0),
        (A7, "0122", 220.1),
        (A9, "563492", -12.3456),  # -12.3456 kW
        (A9, "000001", 1.0),
        (A25, "235100", 5.123),
        (A25, "001080", -1.0),
        (A13, "78563412", 1234.5678),
        (A2, "5664", 4560.0),  # 456 x 10^1 kW (G3G2G1 = 011)
        (A2, "23B1", -12.3),  # 123 x 10^-1 kW, sign D4
        (A2, "01E0", 0.001),
        (A3, "67452311", -1234567.0),  # kWh, sign D4 of the fourth byte
        (A3, "34120040", 1234000.0),  # D6: MWh
    ],
)
def test_formats_at_known_bytes(field: Any, raw: str, value: float) -> None:
    assert field.value_of(bytes.fromhex(raw)) == pytest.approx(value)
    assert field.value_of(field.bytes_of(value)) == pytest.approx(value)


@pytest.mark.parametrize("field", [A5, A7, A9, A13, A25, A2, A3])
def test_all_ee_is_no_data_and_bad_bcd_is_a_codec_error(field: Any) -> None:
    assert field.value_of(b"\xee" * field.nbytes) is None
    with pytest.raises(GDW1376Error):
        field.value_of(b"\x3a" * field.nbytes)


def _values(field: Any) -> st.SearchStrategy[float | None]:
    sample = {A5: (-799.9, 799.9), A7: (0, 999.9), A9: (-79.9999, 79.9999), A25: (-799.999, 799.999)}
    low, high = sample.get(field, (0, 9999.99))
    scale = getattr(field, "scale", 1)
    return st.none() | st.integers(round(low * scale), round(high * scale)).map(lambda n: n / scale)


@pytest.mark.parametrize("fn", [fn for fn, kind in CURVE_KINDS.items() if kind.field not in (A2, A3)])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_curve_both_ways_and_the_fast_path_agrees(fn: int, data: st.DataObject) -> None:
    codec = CODECS[(0x0D, True, fn)]
    assert isinstance(codec, Declared) and codec.fast is not None
    values = tuple(data.draw(st.lists(_values(CURVE_KINDS[fn].field), max_size=12)))
    curve = Curve(START, data.draw(st.sampled_from((1, 2, 3, 254, 255))), values)
    raw = codec.encode(curve)
    assert raw == codec.encode_declared(curve)
    assert codec.decode(raw, 0, len(raw)) == codec.decode_declared(raw, 0, len(raw)) == (curve, len(raw))
    cut = raw[: data.draw(st.integers(0, len(raw) - 1))]
    with pytest.raises(GDW1376Error):
        codec.decode(cut, 0, len(cut))


def _answer(afn: int, units: list[Unit]) -> bytes:
    return encode(Frame(Control(up=True, prm=False, function=8), ADDRESS, afn, Seq(3), units))


SNAPSHOT = PhaseSnapshot(
    dt.datetime(2024, 5, 1, 10, 15),
    1.5,
    (0.5, 0.5, 0.5),
    -0.3,
    (-0.1, -0.1, -0.1),
    98.0,
    (98.0, 97.5, None),
    (220.1, 221.2, 219.9),
    (2.3, 2.301, 2.299),
    0.012,
    1.6,
    (0.53, 0.53, 0.53),
)


def test_a_multi_unit_curve_answer_of_every_kind_decodes_completely() -> None:
    groups: dict[int, list[int]] = {}
    for fn in CURVE_KINDS:
        groups.setdefault((fn - 1) // 8, []).append(fn)
    units, expected = [], {}
    for fns in groups.values():
        curves = []
        for pn in (1, 2):
            for fn in fns:
                field = CURVE_KINDS[fn].field
                curve = Curve(START, 1, (field.value_of(field.bytes_of(fn / 10)), None, 1.0))
                curves.append(curve)
                expected[(pn, fn)] = curve
        units.append(Unit((1, 2), tuple(fns), tuple(curves)))
    frame = decode(_answer(0x0D, units))
    assert frame.stopped is None
    assert {(pn, fn): v for pn, fn, v in frame.items()} == expected


def test_an_unknown_fn_is_named_with_its_position_and_the_decoder_says_where_it_stopped() -> None:
    curve = Curve(START, 1, (220.0, 221.5))
    raw = _answer(
        0x0C,
        [
            Unit((1,), (25,), (SNAPSHOT,)),
            Unit((1,), (26,), (RawData(bytes(61)),)),  # F26 phase-failure statistics: not decoded here
            Unit((1,), (129,), (EnergyReading(None, 12.5, ()),)),
        ],
    )
    frame = decode(raw)
    assert frame.value(25, 1) == SNAPSHOT
    assert frame.stopped is not None
    assert (frame.stopped.unit, frame.stopped.pn, frame.stopped.fn) == (1, 1, 26)
    assert frame.stopped.offset == 8 + 4 + 67 + 4  # C A AFN SEQ, DA DT, F25, DA DT
    assert frame.stopped.remaining == 61 + 4 + 11
    assert str(frame.stopped).startswith("stopped at unit 2 (p1 AFN 0C F26)")
    # the same data behind a known unit decodes completely
    whole = decode(_answer(0x0D, [Unit((1,), (89,), (curve,)), Unit((1,), (90,), (curve,))]))
    assert whole.stopped is None and whole.value(90, 1) == curve


def test_decode_cli_shows_every_unit_with_values_and_units_and_where_it_stopped() -> None:
    raw = _answer(
        0x0D,
        [
            Unit((1,), (81, 85), (Curve(START, 1, (1.2345, None)), Curve(START, 1, (-0.25, 0.5)))),
            Unit((1,), (89,), (Curve(START, 1, (220.1, 219.9)),)),
            Unit((1,), (92,), (Curve(START, 1, (5.125, 5.0)),)),
            Unit((1,), (105,), (Curve(START, 1, (95.5, -80.0)),)),
            Unit((1,), (200,), (RawData(b"\x01\x02\x03"),)),
        ],
    ).hex()

    def run(*args: str) -> cli.CliResult:
        return cli.headend("decode", *args, env={"COLUMNS": "200", "PATH": ""})

    table = run(raw)
    assert table.returncode == 0, table.stderr
    for shown in (
        "p1 F81 active power curve",
        "from 2024-05-01T00:15:00 every 15 min: 1.2345, - kW",
        "p1 F85 reactive power curve",
        "-0.25, 0.5 kvar",
        "p1 F89 phase A voltage curve",
        "220.1, 219.9 V",
        "p1 F92 phase A current curve",
        "5.125, 5 A",
        "p1 F105 power factor curve",
        "95.5, -80 %",
        "unit 5 (p1 AFN 0D F200) at byte",
        "3 bytes left undecoded",
    ):
        assert shown in table.stdout
    out = json.loads(run("--json", raw).stdout)
    assert [(u["fn"], u["unit"]) for u in out["units"]] == [
        (81, "kW"),
        (85, "kvar"),
        (89, "V"),
        (92, "A"),
        (105, "%"),
        (200, None),
    ]
    assert out["stopped"]["fn"] == 200 and out["stopped"]["remaining"] == 3


PUBLIC = json.loads((Path(__file__).with_name("data") / "gdw1376_curves_public.json").read_text())


@pytest.mark.parametrize("entry", PUBLIC["frames"], ids=lambda e: e["meaning"][:40])
def test_public_curve_frames_decode_completely_as_their_source_says(entry: dict[str, Any]) -> None:
    raw = bytes.fromhex(entry["hex"])
    frame = decode(raw)
    assert frame.stopped is None
    expected = (entry["address"], entry["afn"], entry["ec"])
    assert (frame.address.key, frame.afn, list(frame.ec or ())) == expected
    decoded = [
        {"pn": pn, "fn": fn, "start": v.start.isoformat(), "density": v.density, "values": list(v.values)}
        for pn, fn, v in frame.items()
    ]
    assert decoded == entry["units"]
    assert encode(frame) == raw


@pytest.mark.parametrize("entry", PUBLIC["refused"], ids=lambda e: e["meaning"][:40])
def test_public_frames_with_non_standard_fill_are_refused_with_the_reason(entry: dict[str, Any]) -> None:
    with pytest.raises(GDW1376Error, match=entry["error"]):
        decode(bytes.fromhex(entry["hex"]))
