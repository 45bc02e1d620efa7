"""1376.1 data units: typed records and their construct declarations (one declaration both ways).

Each (AFN, direction, Fn) that the head-end uses has a ``Codec`` in ``CODECS``; unknown ones decode
to ``RawData`` (the rest of the unit area, undivided). Layouts, and the public code each was checked
against with the search tools (facts only; the code here is our own):

- AFN 00 F3 (AFN, then DA DT ERR repeated): Q/GDW 376.1 Kaitai description, ``afn0_f3``.
- AFN 04 / 0A F10 archive record, 27 bytes (serial, Pn, baud|port, protocol, address, password,
  tariffs, digits, collector, user class): the dl_3761 Wireshark dissector (AFN 04 branch, offsets
  18..46 and the D7..D5 baud / D4..D0 port split with 1..7 = 600..19200), and the concentrator
  firmware gdgly/NUC97X_JS STM32F4xx/Terminal/Terminal_AFN0E_Event.c (Pn at record offset 2, port
  = offset 4 & 0x1F).
- AFN 04 / 0A F14 total-group configuration (count of groups; per group its number, count of
  members and one byte per member: D5..D0 = Pn - 1, D6 = reverse direction, D7 = subtract): the
  concentrator firmware gdgly/NUC97X_JS, which keeps a group as number, count, 64 member bytes and
  sums its members' power and energy with these bits (``Terminal_AFN0CF17_F18_Computer``,
  ``Terminal_TotalEnergy_Computer``: ``&0x3f`` point, ``&0x40`` reverse, ``&0x80`` subtract).
- AFN 0C F2 / AFN 05 F31 (A.1): dl_3761 dissector AFN 05 branch (6-byte time before PW).
- AFN 0C F129, AFN 0D F161 (Td_d, A.15 read time, M, (M+1) × A.14): Kaitai ``afn12_f129`` and
  ``positive_indication`` with ``td_d: a20``.
- AFN 0D curves (Td_c = A.15 start, density, points; then one value per point): the Fn numbers,
  names and value widths of F73..F76, F81..F95, F97..F108 and F145..F148 from the AFN 0D curve
  storage layout of gdgly/NUC97X_JS (``ADDR_AFN0DF73`` … ``ADDR_AFN0DF148``: 2/3/4 bytes per point)
  and the Fn list of the PLMS-style C# verification tool ``CurveData_376`` (F81..F108 names); the
  Td_c downlink from the JS 1376.1 frame notes (``Fn81`` … ``Fn95``: 5-byte A.15, density m, points n).
- AFN 0C F25 (A.15 read time, total/A/B/C active power A.9, total/A/B/C reactive power A.9, total/
  A/B/C power factor A.5, A/B/C voltage A.7, A/B/C current A.25, zero-sequence current A.25, total/
  A/B/C apparent power A.9 = 67 bytes): the PLMS Java ``AFN0C/F25`` field order (its 2004 layout
  with 2-byte currents), and the 67-byte record of gdgly/NUC97X_JS (``MC(0xEE,ADDR_AFN0CF25,67*…)``).
- AFN 0E F1/F2 (EC1, EC2, Pm, Pn, then ERC, Le, data): reference note; ERC 14 = off time, on time
  (two A.15, Le 10), or the 2014 layout with an attribute byte first (Le 11): gdgly/NUC97X_JS
  Terminal_AFN0E_Event.c reads the power-on time at record offset 8 (ERC, Le, flags, off, on).
- AFN 10 F1 (port, control word, frame timeout, byte timeout, k, content / port, k, content): Kaitai
  ``afn16_f1`` (uplink) and the JS frame notes' AFN 10 request/answer pair (downlink: ``1F 6B BC 0A
  10 00`` + a 16-byte DL/T 645 frame).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from construct import (
    Adapter,
    Array,
    BitsInteger,
    BitStruct,
    Bytes,
    Construct,
    ConstructError,
    Flag,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Nibble,
    Padding,
    Prefixed,
    PrefixedArray,
    Struct,
    Tell,
    this,
)

from protocols.gdw1376.errors import EncodeError, PayloadError
from protocols.gdw1376.fields import da_bytes, dt_bytes, fn_set, pn_set
from protocols.gdw1376.formats import A1, A2, A3, A5, A7, A9, A11, A13, A14, A15, A20, A25, Digits, Field

# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfirmItem:
    """One data unit confirmed (ok) or denied in an AFN 00 F3 answer."""

    pn: int
    fn: int
    ok: bool


@dataclass(frozen=True, slots=True)
class UnitConfirmation:
    """AFN 00 F3: per-unit confirmation of the frame with ``afn``."""

    afn: int
    items: tuple[ConfirmItem, ...]


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """Forward active energy (kWh): total and tariffs 1..M; None = no data (``EE``)."""

    read_at: dt.datetime | None
    total: float | None
    tariffs: tuple[float | None, ...]

    @property
    def collected(self) -> bool:
        """False when the concentrator has no value (all EE)."""
        return self.total is not None


@dataclass(frozen=True, slots=True)
class DailyReading:
    """AFN 0D F161: the midnight freeze of ``day`` (Td_d) and its energy reading."""

    day: dt.date
    reading: EnergyReading


@dataclass(frozen=True, slots=True)
class CurveRequest:
    """Td_c: first point, density code (1 = 15 min, 2 = 30, 3 = 60, 254 = 5, 255 = 1) and count."""

    start: dt.datetime
    density: int
    points: int

    @property
    def step(self) -> dt.timedelta:
        """Interval between points; raises PayloadError on an unknown density code."""
        minutes = DENSITY_MINUTES.get(self.density)
        if minutes is None:
            raise PayloadError(f"curve density code {self.density} is not 1, 2, 3, 254 or 255")
        return dt.timedelta(minutes=minutes)


DENSITY_MINUTES = {1: 15, 2: 30, 3: 60, 254: 5, 255: 1}


@dataclass(frozen=True, slots=True)
class Curve:
    """An AFN 0D curve uplink: the Td_c and one value per point (None = no data)."""

    start: dt.datetime
    density: int
    values: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class CurveKind:
    """What one AFN 0D curve Fn holds: its name, the format of a point and the point's unit, and the
    interval quantity of the meter it gives (``factor`` times the point; None: not a meter quantity)."""

    fn: int
    name: str
    field: Field
    unit: str
    quantity: str | None = None
    factor: float = 1.0


CURVE_KINDS: dict[int, CurveKind] = {
    k.fn: k
    for k in (
        CurveKind(73, "total-group active power", A2, "kW"),
        CurveKind(74, "total-group reactive power", A2, "kvar"),
        CurveKind(75, "total-group active energy", A3, "kWh"),
        CurveKind(76, "total-group reactive energy", A3, "kvarh"),
        CurveKind(81, "active power", A9, "kW", "power_kw"),
        CurveKind(82, "phase A active power", A9, "kW", "power_a_kw"),
        CurveKind(83, "phase B active power", A9, "kW", "power_b_kw"),
        CurveKind(84, "phase C active power", A9, "kW", "power_c_kw"),
        CurveKind(85, "reactive power", A9, "kvar", "reactive_power_kvar"),
        CurveKind(86, "phase A reactive power", A9, "kvar", "reactive_power_a_kvar"),
        CurveKind(87, "phase B reactive power", A9, "kvar", "reactive_power_b_kvar"),
        CurveKind(88, "phase C reactive power", A9, "kvar", "reactive_power_c_kvar"),
        CurveKind(89, "phase A voltage", A7, "V", "voltage_a_v"),
        CurveKind(90, "phase B voltage", A7, "V", "voltage_b_v"),
        CurveKind(91, "phase C voltage", A7, "V", "voltage_c_v"),
        CurveKind(92, "phase A current", A25, "A", "current_a_a"),
        CurveKind(93, "phase B current", A25, "A", "current_b_a"),
        CurveKind(94, "phase C current", A25, "A", "current_c_a"),
        CurveKind(95, "zero-sequence current", A25, "A", "current_n_a"),
        CurveKind(97, "forward active energy quantity", A13, "kWh", "energy_import_interval_kwh"),
        CurveKind(98, "forward reactive energy quantity", A13, "kvarh", "reactive_import_interval_kvarh"),
        CurveKind(99, "reverse active energy quantity", A13, "kWh", "energy_export_interval_kwh"),
        CurveKind(100, "reverse reactive energy quantity", A13, "kvarh", "reactive_export_interval_kvarh"),
        CurveKind(101, "forward active energy reading", A11, "kWh", "energy_import_kwh"),
        CurveKind(102, "forward reactive energy reading", A11, "kvarh"),
        CurveKind(103, "reverse active energy reading", A11, "kWh", "energy_export_kwh"),
        CurveKind(104, "reverse reactive energy reading", A11, "kvarh"),
        CurveKind(105, "power factor", A5, "%", "pf", 0.01),
        CurveKind(106, "phase A power factor", A5, "%", "pf_a", 0.01),
        CurveKind(107, "phase B power factor", A5, "%", "pf_b", 0.01),
        CurveKind(108, "phase C power factor", A5, "%", "pf_c", 0.01),
        CurveKind(145, "quadrant I reactive energy reading", A11, "kvarh"),
        CurveKind(146, "quadrant IV reactive energy reading", A11, "kvarh"),
        CurveKind(147, "quadrant II reactive energy reading", A11, "kvarh"),
        CurveKind(148, "quadrant III reactive energy reading", A11, "kvarh"),
    )
}


@dataclass(frozen=True, slots=True)
class PhaseSnapshot:
    """AFN 0C F25: power, power factor (%), voltage and current of a measuring point now (None = EE).

    The per-phase tuples are (A, B, C); the totals are separate fields.
    """

    read_at: dt.datetime | None
    active_kw: float | None
    active_phase_kw: tuple[float | None, float | None, float | None]
    reactive_kvar: float | None
    reactive_phase_kvar: tuple[float | None, float | None, float | None]
    power_factor: float | None
    power_factor_phase: tuple[float | None, float | None, float | None]
    voltage_v: tuple[float | None, float | None, float | None]
    current_a: tuple[float | None, float | None, float | None]
    zero_sequence_a: float | None
    apparent_kva: float | None
    apparent_phase_kva: tuple[float | None, float | None, float | None]


@dataclass(frozen=True, slots=True)
class EventRequest:
    """AFN 0E F1/F2 downlink: event pointer range Pm..Pn (Pn exclusive)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PowerEvent:
    """ERC 14: terminal power off / power on times (None when not yet known).

    ``flags`` is the event attribute byte of the 2014 layout (Le 11: flags, off, on); None for the
    original layout (Le 10: off, on).
    """

    erc: ClassVar[int] = 14
    off: dt.datetime | None
    on: dt.datetime | None
    flags: int | None = None


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event record this codec does not interpret: ERC and its data bytes."""

    erc: int
    data: bytes


@dataclass(frozen=True, slots=True)
class EventRecords:
    """AFN 0E F1/F2 uplink: event counters EC1/EC2, the pointer range and its records."""

    ec1: int
    ec2: int
    start: int
    end: int
    records: tuple[PowerEvent | RawEvent, ...]


@dataclass(frozen=True, slots=True)
class Timeout:
    """The AFN 10 F1 frame timeout byte: ``value`` in seconds (``seconds``) or in 10 ms steps."""

    value: int
    seconds: bool = True

    @property
    def ms(self) -> int:
        return self.value * (1000 if self.seconds else 10)

    @classmethod
    def of_ms(cls, ms: int) -> Timeout:
        """The finest representation of ``ms`` (10 ms steps up to 1.27 s, else whole seconds)."""
        if ms <= 1270:
            return cls(max(1, round(ms / 10)), seconds=False)
        return cls(min(127, round(ms / 1000)), seconds=True)


FORWARD_BAUDS = (300, 600, 1200, 2400, 4800, 7200, 9600, 19200)  # control word D7..D5
ARCHIVE_BAUDS = (0, 600, 1200, 2400, 4800, 7200, 9600, 19200)  # archive D7..D5 (0 = default)


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """AFN 10 F1 downlink: what to send on which port, with which line settings and timeouts."""

    port: int
    content: bytes
    baud: int = 2400
    parity: str = "E"  # N, E or O
    stop_bits: int = 1
    data_bits: int = 8
    frame_timeout: Timeout = Timeout(5)
    byte_timeout_ms: int = 100

    @property
    def line_format(self) -> str:
        """The character format, e.g. ``8E1``."""
        return f"{self.data_bits}{self.parity}{self.stop_bits}"


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """AFN 10 F1 uplink: the port and the meter's raw answer (empty: no answer within the timeout)."""

    port: int
    content: bytes


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One meter of the concentrator's archive (AFN 04 / 0A F10)."""

    serial: int
    pn: int
    port: int
    address: str
    protocol: int = 30  # 1 = DL/T 645-1997, 30 = DL/T 645-2007, 2 = AC sampling, 31 = carrier module
    baud: int = 0  # 0 = the port's default
    password: bytes = bytes(6)
    tariffs: int = 4
    integer_digits: int = 6
    decimal_digits: int = 2
    collector: str = "000000000000"
    user_major: int = 0
    user_minor: int = 0


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """AFN 0A F10 downlink: the archive serial numbers wanted."""

    serials: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One measuring point of a total group: forward or ``reverse`` direction, added or ``subtract``ed."""

    pn: int
    reverse: bool = False
    subtract: bool = False


@dataclass(frozen=True, slots=True)
class TotalGroup:
    """One total group (总加组) of the AFN 04 / 0A F14 configuration: its number and members."""

    number: int
    members: tuple[GroupMember, ...]


MAX_GROUP_MEMBER_PN = 64  # a member byte holds Pn - 1 in six bits


@dataclass(frozen=True, slots=True)
class RawData:
    """Data of a unit this codec does not know (the rest of the unit area, undivided)."""

    data: bytes


# --- construct declarations ----------------------------------------------------------------------


class RecordAdapter(Adapter):
    """Map a construct ``Struct`` to a record and back with two small functions."""

    def __init__(self, subcon: Construct, decode: Any, encode: Any) -> None:
        super().__init__(subcon)
        self._to_record = decode
        self._from_record = encode

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        return self._to_record(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return self._from_record(obj)


def _index(table: tuple[int, ...], value: int, what: str) -> int:
    try:
        return table.index(value)
    except ValueError:
        raise EncodeError(f"{what} {value} not one of {list(table)}") from None


ENERGY = RecordAdapter(
    Struct("read_at" / A15, "m" / Int8ul, "values" / Array(this.m + 1, A14)),
    lambda c: EnergyReading(c.read_at, c["values"][0], tuple(c["values"][1:])),
    lambda r: {"read_at": r.read_at, "m": len(r.tariffs), "values": [r.total, *r.tariffs]},
)

DAILY = RecordAdapter(
    Struct("day" / A20, "reading" / ENERGY),
    lambda c: DailyReading(c.day, c.reading),
    lambda r: {"day": r.day, "reading": r.reading},
)

TD_C = Struct("start" / A15, "density" / Int8ul, "points" / Int8ul)

CURVE_REQUEST = RecordAdapter(
    TD_C,
    lambda c: CurveRequest(c.start, c.density, c.points),
    lambda r: {"start": r.start, "density": r.density, "points": r.points},
)


def curve_declaration(field: Field) -> Construct:
    """Td_c, then ``points`` values of ``field``."""
    return RecordAdapter(
        Struct("start" / A15, "density" / Int8ul, "points" / Int8ul, "values" / Array(this.points, field)),
        lambda c: Curve(c.start, c.density, tuple(c["values"])),
        _curve_fields,
    )


def _curve_fields(r: Curve) -> dict[str, Any]:
    if len(r.values) > 255:
        raise EncodeError(f"{len(r.values)} curve points do not fit the point-count byte")
    return {"start": r.start, "density": r.density, "points": len(r.values), "values": list(r.values)}


PHASES = ("a", "b", "c")
SNAPSHOT = RecordAdapter(
    Struct(
        "read_at" / A15,
        "active" / Array(4, A9),
        "reactive" / Array(4, A9),
        "pf" / Array(4, A5),
        "voltage" / Array(3, A7),
        "current" / Array(3, A25),
        "zero" / A25,
        "apparent" / Array(4, A9),
    ),
    lambda c: PhaseSnapshot(
        c.read_at,
        c.active[0],
        tuple(c.active[1:]),
        c.reactive[0],
        tuple(c.reactive[1:]),
        c.pf[0],
        tuple(c.pf[1:]),
        tuple(c.voltage),
        tuple(c.current),
        c.zero,
        c.apparent[0],
        tuple(c.apparent[1:]),
    ),
    lambda r: {
        "read_at": r.read_at,
        "active": [r.active_kw, *r.active_phase_kw],
        "reactive": [r.reactive_kvar, *r.reactive_phase_kvar],
        "pf": [r.power_factor, *r.power_factor_phase],
        "voltage": list(r.voltage_v),
        "current": list(r.current_a),
        "zero": r.zero_sequence_a,
        "apparent": [r.apparent_kva, *r.apparent_phase_kva],
    },
)
SNAPSHOT_LEN = 67

EVENT_REQUEST = RecordAdapter(
    Struct("start" / Int8ul, "end" / Int8ul),
    lambda c: EventRequest(c.start, c.end),
    lambda r: {"start": r.start, "end": r.end},
)

POWER_EVENT = Struct("off" / A15, "on" / A15)
POWER_EVENT_FLAGGED = Struct("flags" / Int8ul, "off" / A15, "on" / A15)
POWER_EVENT_LENS = {POWER_EVENT.sizeof(): POWER_EVENT, POWER_EVENT_FLAGGED.sizeof(): POWER_EVENT_FLAGGED}


def _event(c: Any) -> PowerEvent | RawEvent:
    layout = POWER_EVENT_LENS.get(len(c.data)) if c.erc == PowerEvent.erc else None
    if layout is None:
        return RawEvent(c.erc, c.data)
    times = layout.parse(c.data)
    return PowerEvent(times.off, times.on, times.get("flags"))


def _event_fields(r: PowerEvent | RawEvent) -> dict[str, Any]:
    if isinstance(r, PowerEvent):
        if r.flags is None:
            return {"erc": PowerEvent.erc, "data": POWER_EVENT.build({"off": r.off, "on": r.on})}
        data = POWER_EVENT_FLAGGED.build({"flags": r.flags, "off": r.off, "on": r.on})
        return {"erc": PowerEvent.erc, "data": data}
    return {"erc": r.erc, "data": r.data}


EVENT = RecordAdapter(Struct("erc" / Int8ul, "data" / Prefixed(Int8ul, GreedyBytes)), _event, _event_fields)

EVENTS = RecordAdapter(
    Struct(
        "ec1" / Int8ul,
        "ec2" / Int8ul,
        "start" / Int8ul,
        "end" / Int8ul,
        "records" / Array((this.end - this.start) % 256, EVENT),
    ),
    lambda c: EventRecords(c.ec1, c.ec2, c.start, c.end, tuple(c.records)),
    lambda r: {"ec1": r.ec1, "ec2": r.ec2, "start": r.start, "end": r.end, "records": list(r.records)},
)


def _check_events(r: EventRecords) -> EventRecords:
    if (r.end - r.start) % 256 != len(r.records):
        raise EncodeError(
            f"pointers {r.start}..{r.end} span {(r.end - r.start) % 256} records, not {len(r.records)}"
        )
    return r


LINE_WORD = BitStruct(
    "baud" / BitsInteger(3),
    "two_stop" / Flag,
    "parity_on" / Flag,
    "odd" / Flag,
    "data_bits" / BitsInteger(2),
)
TIMEOUT_BYTE = BitStruct("seconds" / Flag, "value" / BitsInteger(7))


def _forward_request(c: Any) -> ForwardRequest:
    line = c.line
    return ForwardRequest(
        port=c.port,
        content=c.content,
        baud=FORWARD_BAUDS[line.baud],
        parity=("O" if line.odd else "E") if line.parity_on else "N",
        stop_bits=2 if line.two_stop else 1,
        data_bits=5 + line.data_bits,
        frame_timeout=Timeout(c.frame_timeout.value, c.frame_timeout.seconds),
        byte_timeout_ms=c.byte_timeout * 10,
    )


def _forward_request_fields(r: ForwardRequest) -> dict[str, Any]:
    if r.parity not in ("N", "E", "O"):
        raise EncodeError(f"parity {r.parity!r} is not N, E or O")
    if r.stop_bits not in (1, 2) or not 5 <= r.data_bits <= 8:
        raise EncodeError(f"line format {r.line_format} unsupported (5..8 data bits, 1 or 2 stop bits)")
    if not 0 <= r.frame_timeout.value <= 127:
        raise EncodeError(f"frame timeout value {r.frame_timeout.value} out of range 0..127")
    if r.byte_timeout_ms % 10 or not 0 <= r.byte_timeout_ms <= 2550:
        raise EncodeError(f"byte timeout {r.byte_timeout_ms} ms: a multiple of 10 ms up to 2550")
    return {
        "port": r.port,
        "line": {
            "baud": _index(FORWARD_BAUDS, r.baud, "forwarding baud"),
            "two_stop": r.stop_bits == 2,
            "parity_on": r.parity != "N",
            "odd": r.parity == "O",
            "data_bits": r.data_bits - 5,
        },
        "frame_timeout": {"seconds": r.frame_timeout.seconds, "value": r.frame_timeout.value},
        "byte_timeout": r.byte_timeout_ms // 10,
        "content": r.content,
    }


FORWARD_REQUEST = RecordAdapter(
    Struct(
        "port" / Int8ul,
        "line" / LINE_WORD,
        "frame_timeout" / TIMEOUT_BYTE,
        "byte_timeout" / Int8ul,
        "content" / Prefixed(Int16ul, GreedyBytes),
    ),
    _forward_request,
    _forward_request_fields,
)

FORWARD_REPLY = RecordAdapter(
    Struct("port" / Int8ul, "content" / Prefixed(Int16ul, GreedyBytes)),
    lambda c: ForwardReply(c.port, c.content),
    lambda r: {"port": r.port, "content": r.content},
)

ARCHIVE_RECORD = RecordAdapter(
    Struct(
        "serial" / Int16ul,
        "pn" / Int16ul,
        "link" / BitStruct("baud" / BitsInteger(3), "port" / BitsInteger(5)),
        "protocol" / Int8ul,
        "address" / Digits(6),
        "password" / Bytes(6),
        "tariffs" / BitStruct(Padding(2), "count" / BitsInteger(6)),
        "digits" / BitStruct(Padding(4), "integer" / BitsInteger(2), "decimal" / BitsInteger(2)),
        "collector" / Digits(6),
        "user" / BitStruct("major" / Nibble, "minor" / Nibble),
    ),
    lambda c: ArchiveRecord(
        serial=c.serial,
        pn=c.pn,
        port=c.link.port,
        address=c.address,
        protocol=c.protocol,
        baud=ARCHIVE_BAUDS[c.link.baud],
        password=c.password,
        tariffs=c.tariffs.count,
        integer_digits=4 + c.digits.integer,
        decimal_digits=1 + c.digits.decimal,
        collector=c.collector,
        user_major=c.user.major,
        user_minor=c.user.minor,
    ),
    lambda r: {
        "serial": r.serial,
        "pn": r.pn,
        "link": {"baud": _index(ARCHIVE_BAUDS, r.baud, "archive baud"), "port": r.port},
        "protocol": r.protocol,
        "address": r.address,
        "password": r.password,
        "tariffs": {"count": r.tariffs},
        "digits": {"integer": r.integer_digits - 4, "decimal": r.decimal_digits - 1},
        "collector": r.collector,
        "user": {"major": r.user_major, "minor": r.user_minor},
    },
)
ARCHIVE_RECORD_LEN = 27

ARCHIVE = RecordAdapter(
    PrefixedArray(Int16ul, ARCHIVE_RECORD),
    tuple,
    list,
)

ARCHIVE_QUERY = RecordAdapter(
    PrefixedArray(Int16ul, Int16ul),
    lambda c: ArchiveQuery(tuple(c)),
    lambda r: list(r.serials),
)


def _member_fields(m: GroupMember) -> dict[str, Any]:
    if not 1 <= m.pn <= MAX_GROUP_MEMBER_PN:
        raise EncodeError(f"total-group member Pn {m.pn} not in 1..{MAX_GROUP_MEMBER_PN}")
    return {"subtract": m.subtract, "reverse": m.reverse, "point": m.pn - 1}


GROUP_MEMBER = RecordAdapter(
    BitStruct("subtract" / Flag, "reverse" / Flag, "point" / BitsInteger(6)),
    lambda c: GroupMember(c.point + 1, c.reverse, c.subtract),
    _member_fields,
)

TOTAL_GROUPS = RecordAdapter(
    PrefixedArray(
        Int8ul,
        RecordAdapter(
            Struct("number" / Int8ul, "members" / PrefixedArray(Int8ul, GROUP_MEMBER)),
            lambda c: TotalGroup(c.number, tuple(c.members)),
            lambda r: {"number": r.number, "members": list(r.members)},
        ),
    ),
    tuple,
    list,
)

CONFIRM_ITEM = Struct("da" / Bytes(2), "dt" / Bytes(2), "err" / Int8ul)


# --- codecs --------------------------------------------------------------------------------------


class Codec:
    """How one kind of data unit is read from / written to the unit area."""

    greedy = False  # takes the rest of the unit area

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError


class Empty(Codec):
    """A unit without data (requests, AFN 00 F1/F2)."""

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        return None, pos

    def encode(self, value: Any) -> bytes:
        if value is not None:
            raise EncodeError(f"this data unit carries no data, got {value!r}")
        return b""


FastDecode = Callable[[bytes, int, int], tuple[Any, int]]
FastEncode = Callable[[Any], bytes]


class Declared(Codec):
    """A unit whose data is one construct declaration (its length follows from the declaration).

    ``fast`` is an optional hand-written (decode, encode) pair for the hot units (readings,
    forwarding); bench/codec.py measures why, and tests/gdw1376/test_fastpath.py checks that it
    agrees with the declaration on generated values and on damaged input.
    """

    def __init__(
        self,
        declaration: Construct,
        kind: type | tuple[type, ...],
        fast: tuple[FastDecode, FastEncode] | None = None,
    ) -> None:
        self.measured = Struct("value" / declaration, "end" / Tell)
        self.declaration = declaration
        self.kind = kind
        self.fast = fast

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        if self.fast is not None:
            return self.fast[0](buf, pos, end)
        return self.decode_declared(buf, pos, end)

    def decode_declared(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        """Decode with the construct declaration (the reference for the fast path)."""
        try:
            parsed = self.measured.parse(buf[pos:end])
        except ConstructError as exc:
            raise PayloadError(f"data unit truncated or malformed: {_reason(exc)}") from None
        return parsed.value, pos + parsed.end

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, self.kind):
            raise EncodeError(f"data unit wants {self.kind}, got {type(value).__name__}")
        if self.fast is not None:
            return self.fast[1](value)
        return self.encode_declared(value)

    def encode_declared(self, value: Any) -> bytes:
        """Encode with the construct declaration (the reference for the fast path)."""
        if isinstance(value, EventRecords):
            _check_events(value)
        try:
            return bytes(self.declaration.build(value))
        except ConstructError as exc:
            raise EncodeError(f"cannot encode {value!r}: {_reason(exc)}") from None


# --- hand-written fast paths (same layouts as ENERGY, DAILY, FORWARD_REQUEST, FORWARD_REPLY) ----


def _need(buf: bytes, pos: int, end: int, count: int) -> None:
    if end - pos < count:
        raise PayloadError(
            f"data unit truncated or malformed: {count} bytes needed, {max(0, end - pos)} left"
        )


def _energy_at(buf: bytes, pos: int, end: int) -> tuple[EnergyReading, int]:
    _need(buf, pos, end, 6)
    read_at = A15.value_of(bytes(buf[pos : pos + 5]))
    stop = pos + 6 + 5 * (buf[pos + 5] + 1)
    _need(buf, pos, end, stop - pos)
    values = [A14.value_of(bytes(buf[i : i + 5])) for i in range(pos + 6, stop, 5)]
    return EnergyReading(read_at, values[0], tuple(values[1:])), stop


def _energy_bytes(r: EnergyReading) -> bytes:
    if len(r.tariffs) > 254:
        raise EncodeError(f"{len(r.tariffs)} tariffs do not fit the M byte")
    head = A15.bytes_of(r.read_at) + bytes((len(r.tariffs),))
    return head + b"".join(A14.bytes_of(v) for v in (r.total, *r.tariffs))


def _daily_at(buf: bytes, pos: int, end: int) -> tuple[DailyReading, int]:
    _need(buf, pos, end, 3)
    day = A20.value_of(bytes(buf[pos : pos + 3]))
    reading, stop = _energy_at(buf, pos + 3, end)
    return DailyReading(day, reading), stop


def _daily_bytes(r: DailyReading) -> bytes:
    return A20.bytes_of(r.day) + _energy_bytes(r.reading)


def _content_at(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    _need(buf, pos, end, 2)
    stop = pos + 2 + (buf[pos] | (buf[pos + 1] << 8))
    _need(buf, pos, end, stop - pos)
    return bytes(buf[pos + 2 : stop]), stop


def curve_fast_path(field: Field) -> tuple[FastDecode, FastEncode]:
    """The hand-written (decode, encode) of a curve of ``field`` points (same layout as the declaration)."""
    width = field.nbytes
    value_of, bytes_of = field.value_of, field.bytes_of

    def decode(buf: bytes, pos: int, end: int) -> tuple[Curve, int]:
        _need(buf, pos, end, 7)
        start = A15.value_of(bytes(buf[pos : pos + 5]))
        stop = pos + 7 + width * buf[pos + 6]
        _need(buf, pos, end, stop - pos)
        values = tuple(value_of(bytes(buf[i : i + width])) for i in range(pos + 7, stop, width))
        return Curve(start, buf[pos + 5], values), stop

    def encode(r: Curve) -> bytes:
        fields = _curve_fields(r)
        head = A15.bytes_of(r.start) + bytes((_byte(r.density, "density"), fields["points"]))
        return head + b"".join(bytes_of(v) for v in r.values)

    return decode, encode


def _forward_request_at(buf: bytes, pos: int, end: int) -> tuple[ForwardRequest, int]:
    _need(buf, pos, end, 4)
    port, line, frame_timeout, byte_timeout = buf[pos : pos + 4]
    content, stop = _content_at(buf, pos + 4, end)
    request = ForwardRequest(
        port=port,
        content=content,
        baud=FORWARD_BAUDS[line >> 5],
        parity=("O" if line & 0x04 else "E") if line & 0x08 else "N",
        stop_bits=2 if line & 0x10 else 1,
        data_bits=5 + (line & 0x03),
        frame_timeout=Timeout(frame_timeout & 0x7F, bool(frame_timeout & 0x80)),
        byte_timeout_ms=byte_timeout * 10,
    )
    return request, stop


def _forward_request_bytes(r: ForwardRequest) -> bytes:
    f = _forward_request_fields(r)
    line = f["line"]
    word = (line["baud"] << 5) | (line["two_stop"] << 4) | (line["parity_on"] << 3) | (line["odd"] << 2)
    head = bytes(
        (
            _byte(r.port, "port"),
            word | line["data_bits"],
            (r.frame_timeout.seconds << 7) | r.frame_timeout.value,
            f["byte_timeout"],
        )
    )
    return head + _with_length(r.content)


def _forward_reply_at(buf: bytes, pos: int, end: int) -> tuple[ForwardReply, int]:
    _need(buf, pos, end, 1)
    content, stop = _content_at(buf, pos + 1, end)
    return ForwardReply(buf[pos], content), stop


def _forward_reply_bytes(r: ForwardReply) -> bytes:
    return bytes((_byte(r.port, "port"),)) + _with_length(r.content)


def _byte(value: int, what: str) -> int:
    if not 0 <= value <= 255:
        raise EncodeError(f"{what} {value} out of range 0..255")
    return value


def _with_length(content: bytes) -> bytes:
    if len(content) > 0xFFFF:
        raise EncodeError(f"forwarded content of {len(content)} bytes exceeds 65535")
    return len(content).to_bytes(2, "little") + bytes(content)


def _reason(exc: ConstructError) -> str:
    return str(exc).splitlines()[-1] if str(exc) else type(exc).__name__


class Rest(Codec):
    """The rest of the unit area as bytes (unknown Fn), or None when empty if ``optional``."""

    greedy = True

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        return RawData(bytes(buf[pos:end])), end

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, RawData):
            raise EncodeError(f"unknown data unit wants RawData, got {type(value).__name__}")
        return value.data


class LinkData(Codec):
    """AFN 02 F1/F2/F3 uplink: no data, a clock (A.1, 6 bytes) or other bytes (version, password)."""

    greedy = True

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        data = bytes(buf[pos:end])
        if not data:
            return None, end
        if len(data) == A1.nbytes:
            try:
                return A1.parse(data), end
            except PayloadError:
                pass
        return RawData(data), end

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b""
        if isinstance(value, dt.datetime):
            return bytes(A1.build(value))
        if isinstance(value, RawData):
            return value.data
        raise EncodeError(f"link-test data wants None, a datetime or RawData, got {value!r}")


class Confirmations(Codec):
    """AFN 00 F3: the confirmed AFN, then DA DT ERR to the end of the unit area."""

    greedy = True

    def decode(self, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
        if pos >= end:
            raise PayloadError("AFN 00 F3 without the confirmed AFN")
        afn = buf[pos]
        body = buf[pos + 1 : end]
        if len(body) % CONFIRM_ITEM.sizeof():
            raise PayloadError(f"AFN 00 F3: {len(body)} bytes are no whole number of DA DT ERR items")
        items: list[ConfirmItem] = []
        for i in range(0, len(body), 5):
            item = body[i : i + 5]
            for pn in pn_set(item[0:2]):
                items.extend(ConfirmItem(pn, fn, item[4] == 0) for fn in fn_set(item[2:4]))
        return UnitConfirmation(afn, tuple(items)), end

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, UnitConfirmation) or not 0 <= value.afn <= 255:
            raise EncodeError(f"AFN 00 F3 wants a UnitConfirmation, got {value!r}")
        out = bytearray((value.afn,))
        for item in value.items:
            out += da_bytes((item.pn,)) + dt_bytes((item.fn,)) + bytes((0 if item.ok else 1,))
        return bytes(out)


EMPTY = Empty()
REST = Rest()
CLOCK = Declared(A1, dt.datetime)
ENERGY_CODEC = Declared(ENERGY, EnergyReading, (_energy_at, _energy_bytes))
DAY_CODEC = Declared(A20, dt.date)
CURVE_FNS = tuple(CURVE_KINDS)
SNAPSHOT_FN = 25
TOTAL_GROUPS_FN = 14

CODECS: dict[tuple[int, bool, int], Codec] = {
    (0x00, False, 1): EMPTY,
    (0x00, True, 1): EMPTY,
    (0x00, False, 2): EMPTY,
    (0x00, True, 2): EMPTY,
    (0x00, False, 3): Confirmations(),
    (0x00, True, 3): Confirmations(),
    (0x02, True, 1): LinkData(),
    (0x02, True, 2): LinkData(),
    (0x02, True, 3): LinkData(),
    (0x04, False, 10): Declared(ARCHIVE, tuple),
    (0x04, False, TOTAL_GROUPS_FN): Declared(TOTAL_GROUPS, tuple),
    (0x05, False, 31): CLOCK,
    (0x0A, False, 10): Declared(ARCHIVE_QUERY, ArchiveQuery),
    (0x0A, True, 10): Declared(ARCHIVE, tuple),
    (0x0A, False, TOTAL_GROUPS_FN): EMPTY,
    (0x0A, True, TOTAL_GROUPS_FN): Declared(TOTAL_GROUPS, tuple),
    (0x0C, False, 2): EMPTY,
    (0x0C, True, 2): CLOCK,
    (0x0C, False, 129): EMPTY,
    (0x0C, False, SNAPSHOT_FN): EMPTY,
    (0x0C, True, SNAPSHOT_FN): Declared(SNAPSHOT, PhaseSnapshot),
    (0x0C, True, 129): ENERGY_CODEC,
    (0x0D, False, 161): DAY_CODEC,
    (0x0D, True, 161): Declared(DAILY, DailyReading, (_daily_at, _daily_bytes)),
    (0x0E, False, 1): Declared(EVENT_REQUEST, EventRequest),
    (0x0E, False, 2): Declared(EVENT_REQUEST, EventRequest),
    (0x0E, True, 1): Declared(EVENTS, EventRecords),
    (0x0E, True, 2): Declared(EVENTS, EventRecords),
    (0x10, False, 1): Declared(
        FORWARD_REQUEST, ForwardRequest, (_forward_request_at, _forward_request_bytes)
    ),
    (0x10, True, 1): Declared(FORWARD_REPLY, ForwardReply, (_forward_reply_at, _forward_reply_bytes)),
}
CURVE_REQUEST_CODEC = Declared(CURVE_REQUEST, CurveRequest)
for _kind in CURVE_KINDS.values():
    CODECS[(0x0D, False, _kind.fn)] = CURVE_REQUEST_CODEC
    CODECS[(0x0D, True, _kind.fn)] = Declared(
        curve_declaration(_kind.field), Curve, curve_fast_path(_kind.field)
    )


def codec_for(afn: int, up: bool, fn: int) -> Codec:
    """The codec of one data unit kind (``REST`` for kinds this codec does not know)."""
    return CODECS.get((afn, up, fn), REST)


def known(afn: int, up: bool, fn: int) -> bool:
    """Whether this codec decodes the data of (afn, direction, fn)."""
    return (afn, up, fn) in CODECS


UNIT_NAMES: dict[tuple[int, int], tuple[str, str | None]] = {
    (0x02, 1): ("login", None),
    (0x02, 2): ("logout", None),
    (0x02, 3): ("heartbeat", None),
    (0x10, 1): ("transparent forwarding", None),
    (0x0C, 2): ("terminal clock", None),
    (0x04, TOTAL_GROUPS_FN): ("total-group configuration", None),
    (0x0A, TOTAL_GROUPS_FN): ("total-group configuration", None),
    (0x0C, SNAPSHOT_FN): ("power, power factor, voltage and current now", None),
    (0x0C, 129): ("forward active energy reading now", "kWh"),
    (0x0D, 161): ("daily frozen forward active energy reading", "kWh"),
    **{(0x0D, k.fn): (f"{k.name} curve", k.unit) for k in CURVE_KINDS.values()},
}


def unit_name(afn: int, fn: int) -> tuple[str | None, str | None]:
    """The name and the unit of the values of (afn, fn), where this codec knows them."""
    return UNIT_NAMES.get((afn, fn), (None, None))
