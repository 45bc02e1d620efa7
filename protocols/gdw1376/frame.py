"""A decoded 1376.1 frame (``Frame``) and the two functions between it and bytes: ``decode``/``encode``.

User data: C, A (5), AFN, SEQ, units (DA DT data…)…, AUX: [PW (16, downlink on AFN 01/04/05/06/0F/10)
or EC (2, uplink with ACD)], [Tp (6, when TpV)]. In a unit naming several Pn and Fn, the data repeats
per Pn (ascending) and within it per Fn (ascending). The AUX rules were checked against the Q/GDW
376.1 Kaitai description (``has_pw`` AFN list, ``has_ec`` = ACD, ``has_tp`` = TpV) and two real AFN 10
frames with PW, EC and Tp from public JS frame notes (see tests/gdw1376/data).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from protocols.gdw1376.address import Address
from protocols.gdw1376.data import codec_for, known, unit_name
from protocols.gdw1376.errors import EncodeError, PayloadError
from protocols.gdw1376.fields import (
    PW_AFNS,
    PW_LEN,
    TP_LEN,
    Afn,
    Control,
    Seq,
    Tp,
    da_bytes,
    dt_bytes,
    fn_set,
    pn_set,
)
from protocols.gdw1376.link import PROTOCOL_1376, encode_link, parse_link

EC_LEN = 2
FIXED_LEN = 8  # C, A, AFN, SEQ


@dataclass(frozen=True, slots=True)
class Unit:
    """One data unit: the Pn set of its DA, the Fn set of its DT, one value per (Pn, Fn), Pn-major."""

    pns: tuple[int, ...]
    fns: tuple[int, ...]
    values: tuple[Any, ...] = ()

    def items(self) -> Iterator[tuple[int, int, Any]]:
        """(pn, fn, value) for every value of the unit, in wire order."""
        for (pn, fn), value in zip(itertools.product(self.pns, self.fns), self.values, strict=False):
            yield pn, fn, value


def unit(pn: int | tuple[int, ...], fn: int | tuple[int, ...], *values: Any) -> Unit:
    """Shorthand: ``unit(1, 129)`` (a request), ``unit((1, 2), 129, r1, r2)`` (a two-Pn answer)."""
    pns = pn if isinstance(pn, tuple) else (pn,)
    fns = fn if isinstance(fn, tuple) else (fn,)
    if not values:
        values = (None,) * (len(pns) * len(fns))
    return Unit(pns, fns, values)


@dataclass(frozen=True, slots=True)
class Stop:
    """Where decoding had to stop: the first unit whose Fn this codec does not know while bytes
    remained. Its data and everything after it are kept undivided as ``RawData`` of that unit."""

    afn: int
    unit: int  # index of the unit in the frame, from 0
    pn: int
    fn: int
    offset: int  # of the unknown unit's data, counted from C (the first byte of the user data)
    remaining: int  # bytes left undecoded from there to the AUX

    @property
    def name(self) -> str:
        """The unit's name where it is known (``AFN 0C F26`` otherwise)."""
        label = f"AFN {self.afn:02X} F{self.fn}"
        known_name = unit_name(self.afn, self.fn)[0]
        return f"{label} ({known_name})" if known_name else label

    def __str__(self) -> str:
        return (
            f"stopped at unit {self.unit + 1} (p{self.pn} {self.name}), byte {self.offset}: "
            f"Fn not decoded, {self.remaining} bytes left undecoded"
        )


@dataclass(slots=True)
class Frame:
    """A decoded frame. ``units`` carry typed values (see ``protocols.gdw1376.data``)."""

    control: Control
    address: Address
    afn: int
    seq: Seq
    units: list[Unit] = field(default_factory=list)
    pw: bytes | None = None
    ec: tuple[int, int] | None = None
    tp: Tp | None = None
    protocol: int = PROTOCOL_1376
    stopped: Stop | None = None  # None: every unit decoded

    @property
    def up(self) -> bool:
        """True for terminal-to-master frames."""
        return self.control.up

    @property
    def afn_name(self) -> str:
        try:
            return Afn(self.afn).name
        except ValueError:
            return f"AFN_{self.afn:02X}"

    def items(self) -> Iterator[tuple[int, int, Any]]:
        """(pn, fn, value) over all units."""
        for u in self.units:
            yield from u.items()

    def value(self, fn: int, pn: int = 0) -> Any:
        """The value of (pn, fn); raises KeyError when the frame has none."""
        for p, f, v in self.items():
            if p == pn and f == fn:
                return v
        raise KeyError(f"p{pn} F{fn} not in the frame")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the stable shape printed by ``headend decode --json``)."""
        c = self.control
        return {
            "protocol": "1376.1" if self.protocol == PROTOCOL_1376 else "Q/GDW 130",
            "direction": "up" if c.up else "down",
            "prm": c.prm,
            "function": c.function,
            "acd" if c.up else "fcb": c.acd_fcb,
            "address": self.address.key,
            "msa": self.address.msa,
            "group": self.address.group,
            "afn": self.afn,
            "afn_name": self.afn_name,
            "seq": {"seq": self.seq.seq, "fir": self.seq.fir, "fin": self.seq.fin, "con": self.seq.con},
            "units": [
                {
                    "pn": pn,
                    "fn": fn,
                    "name": unit_name(self.afn, fn)[0],
                    "unit": unit_name(self.afn, fn)[1],
                    "value": jsonable(value),
                }
                for u in self.units
                for pn, fn, value in u.items()
            ],
            "stopped": None
            if self.stopped is None
            else {
                "unit": self.stopped.unit,
                "pn": self.stopped.pn,
                "fn": self.stopped.fn,
                "name": self.stopped.name,
                "offset": self.stopped.offset,
                "remaining": self.stopped.remaining,
            },
            "pw": self.pw.hex().upper() if self.pw is not None else None,
            "ec": list(self.ec) if self.ec else None,
            "tp": jsonable(self.tp),
        }


def jsonable(value: Any) -> Any:
    """Convert decoded values into JSON types (records as dicts, ISO times, hex bytes)."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
        out["type"] = type(value).__name__
        return out
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex().upper()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def aux_lengths(control: Control, afn: int, seq: Seq) -> tuple[int, int, int]:
    """Lengths of PW, EC and Tp that a frame with these header fields carries."""
    pw = PW_LEN if not control.up and afn in PW_AFNS else 0
    ec = EC_LEN if control.acd else 0
    return pw, ec, TP_LEN if seq.tpv else 0


def decode(raw: bytes) -> Frame:
    """Decode one complete frame (FE preamble allowed); raises a ``GDW1376Error`` subclass."""
    link = parse_link(raw)
    data = link.user_data
    control = Control.from_byte(data[0])
    address = Address.from_wire(data[1:6])
    afn = data[6]
    seq = Seq.from_byte(data[7])
    pw_len, ec_len, tp_len = aux_lengths(control, afn, seq)
    end = len(data) - pw_len - ec_len - tp_len
    if end < FIXED_LEN:
        raise PayloadError(
            f"AUX of {pw_len + ec_len + tp_len} bytes does not fit {len(data)} bytes of user data"
        )
    pw = data[end : end + pw_len] if pw_len else None
    ec = (data[end], data[end + 1]) if ec_len else None
    tp = Tp.from_bytes(data[end + pw_len + ec_len :]) if tp_len else None
    units, stopped = decode_units(data, FIXED_LEN, end, afn, control.up)
    return Frame(control, address, afn, seq, units, pw, ec, tp, link.protocol, stopped)


def decode_units(data: bytes, pos: int, end: int, afn: int, up: bool) -> tuple[list[Unit], Stop | None]:
    """Split the unit area into DA/DT units and decode their data, up to the first unknown Fn that
    has bytes after it (then the rest stays undivided and the ``Stop`` says where)."""
    units: list[Unit] = []
    while pos < end:
        if end - pos < 4:
            raise PayloadError(f"{end - pos} stray bytes where a DA DT (4 bytes) should start")
        pns = pn_set(data[pos : pos + 2])
        fns = fn_set(data[pos + 2 : pos + 4])
        pos += 4
        values = []
        for pn, fn in itertools.product(pns, fns):
            if pos < end and not known(afn, up, fn):
                values.append(codec_for(afn, up, fn).decode(data, pos, end)[0])
                units.append(Unit(pns, fns, tuple(values)))
                return units, Stop(afn, len(units) - 1, pn, fn, pos, end - pos)
            value, pos = codec_for(afn, up, fn).decode(data, pos, end)
            values.append(value)
        units.append(Unit(pns, fns, tuple(values)))
    return units, None


def encode_unit(afn: int, up: bool, u: Unit) -> bytes:
    """DA, DT and the data of one unit."""
    if len(u.values) != len(u.pns) * len(u.fns):
        raise EncodeError(f"unit p{list(u.pns)} F{list(u.fns)} needs {len(u.pns) * len(u.fns)} values")
    out = bytearray(da_bytes(u.pns) + dt_bytes(u.fns))
    for (_pn, fn), value in zip(itertools.product(u.pns, u.fns), u.values, strict=True):
        out += codec_for(afn, up, fn).encode(value)
    return bytes(out)


def encode(frame: Frame) -> bytes:
    """Build the complete frame; raises ``EncodeError`` on inconsistent fields or values."""
    up = frame.control.up
    units = b"".join(encode_unit(frame.afn, up, u) for u in frame.units)
    return assemble(frame, units)


def assemble(frame: Frame, units: bytes) -> bytes:
    """The frame with these already-encoded units in place of ``frame.units`` (checks the AUX)."""
    control, afn, seq = frame.control, frame.afn, frame.seq
    if not 0 <= afn <= 255:
        raise EncodeError(f"AFN {afn} out of range")
    pw_len, ec_len, tp_len = aux_lengths(control, afn, seq)
    if bool(pw_len) != (frame.pw is not None) or (frame.pw is not None and len(frame.pw) != PW_LEN):
        need = "needs a 16-byte PW" if pw_len else "carries no PW"
        raise EncodeError(f"a {'uplink' if control.up else 'downlink'} AFN {afn:02X} frame {need}")
    if bool(ec_len) != (frame.ec is not None):
        raise EncodeError("EC must be present exactly when the uplink control field has ACD set")
    if bool(tp_len) != (frame.tp is not None):
        raise EncodeError("Tp must be present exactly when SEQ.TpV is set")
    out = bytearray((control.to_byte(),))
    out += frame.address.to_wire()
    out += bytes((afn, seq.to_byte()))
    out += units
    if frame.pw is not None:
        out += frame.pw
    if frame.ec is not None:
        if not all(0 <= c <= 255 for c in frame.ec):
            raise EncodeError(f"event counters {frame.ec} out of range 0..255")
        out += bytes(frame.ec)
    if frame.tp is not None:
        out += frame.tp.to_bytes()
    return encode_link(bytes(out), frame.protocol)
