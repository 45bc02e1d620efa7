"""Q/GDW 1376.1 codec (concentrator ⇄ master station): pure functions of bytes and values, no I/O.

Typical use::

    from protocols.gdw1376 import Address, Afn, Deframer, build_request, decode, unit
    address = Address.parse("0314-25394")
    raw = build_request(address, Afn.CLASS1_DATA, [unit((1, 2), 129)], seq=3)   # F129 of p1, p2
    frame = decode(reply_bytes)           # Frame(afn=0x0C, units=[Unit(pns=(1, 2), fns=(129,), ...)])
    for pn, fn, reading in frame.items(): ...   # EnergyReading(read_at, total, tariffs)
"""

from protocols.gdw1376.address import Address
from protocols.gdw1376.builders import (
    ALL_CONFIRMED,
    ALL_DENIED,
    HEARTBEAT,
    LOGIN,
    LOGOUT,
    PER_UNIT,
    build_request,
    confirm,
    confirm_units,
    link_test,
    request,
    response_frames,
)
from protocols.gdw1376.data import (
    CURVE_KINDS,
    DENSITY_MINUTES,
    ArchiveQuery,
    ArchiveRecord,
    ConfirmItem,
    Curve,
    CurveKind,
    CurveRequest,
    DailyReading,
    EnergyReading,
    EventRecords,
    EventRequest,
    ForwardReply,
    ForwardRequest,
    GroupMember,
    PhaseSnapshot,
    PowerEvent,
    RawData,
    RawEvent,
    Timeout,
    TotalGroup,
    UnitConfirmation,
)
from protocols.gdw1376.errors import (
    ChecksumError,
    EncodeError,
    FramingError,
    GDW1376Error,
    PayloadError,
    TruncatedFrame,
)
from protocols.gdw1376.fields import ALL_POINTS, Afn, Control, Function, Seq, Tp
from protocols.gdw1376.frame import Frame, Stop, Unit, decode, encode, unit
from protocols.gdw1376.link import Deframer, looks_like_frame, parse_link

__all__ = [
    "ALL_CONFIRMED",
    "ALL_DENIED",
    "ALL_POINTS",
    "CURVE_KINDS",
    "DENSITY_MINUTES",
    "HEARTBEAT",
    "LOGIN",
    "LOGOUT",
    "PER_UNIT",
    "Address",
    "Afn",
    "ArchiveQuery",
    "ArchiveRecord",
    "ChecksumError",
    "ConfirmItem",
    "Control",
    "Curve",
    "CurveKind",
    "CurveRequest",
    "DailyReading",
    "Deframer",
    "EncodeError",
    "EnergyReading",
    "EventRecords",
    "EventRequest",
    "ForwardReply",
    "ForwardRequest",
    "Frame",
    "FramingError",
    "Function",
    "GDW1376Error",
    "GroupMember",
    "PayloadError",
    "PhaseSnapshot",
    "PowerEvent",
    "RawData",
    "RawEvent",
    "Seq",
    "Stop",
    "Timeout",
    "TotalGroup",
    "Tp",
    "TruncatedFrame",
    "Unit",
    "UnitConfirmation",
    "build_request",
    "confirm",
    "confirm_units",
    "decode",
    "encode",
    "link_test",
    "looks_like_frame",
    "parse_link",
    "request",
    "response_frames",
    "unit",
]
