"""Q/GDW 1376.1 codec (concentrator ⇄ master station): pure functions of bytes and values, no I/O.

Typical use::

    from protocols.gdw1376 import Address, Afn, Deframer, build_request, decode, unit
    address = Address.parse("0314-25394")
    raw = build_request(address, Afn.CLASS1_DATA, [unit((1, 2), 129)], seq=3)   # F129 of p1, p2
    frame = decode(reply_bytes)           # Frame(afn=0x0C, units=[Unit(pns=(1, 2), fns=(129,), ...)])
    for pn, fn, reading in frame.items(): ...   # EnergyReading(read_at, total, tariffs)

Names load their module on first use: ``Address`` or the error types alone do not load the
construct trees of the data units.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_HOMES: dict[str, str] = {
    "Address": "protocols.gdw1376.address",
    "ALL_CONFIRMED": "protocols.gdw1376.builders",
    "ALL_DENIED": "protocols.gdw1376.builders",
    "HEARTBEAT": "protocols.gdw1376.builders",
    "LOGIN": "protocols.gdw1376.builders",
    "LOGOUT": "protocols.gdw1376.builders",
    "PER_UNIT": "protocols.gdw1376.builders",
    "build_request": "protocols.gdw1376.builders",
    "confirm": "protocols.gdw1376.builders",
    "confirm_units": "protocols.gdw1376.builders",
    "link_test": "protocols.gdw1376.builders",
    "request": "protocols.gdw1376.builders",
    "response_frames": "protocols.gdw1376.builders",
    "CURVE_KINDS": "protocols.gdw1376.data",
    "DENSITY_MINUTES": "protocols.gdw1376.data",
    "ArchiveQuery": "protocols.gdw1376.data",
    "ArchiveRecord": "protocols.gdw1376.data",
    "ConfirmItem": "protocols.gdw1376.data",
    "Curve": "protocols.gdw1376.data",
    "CurveKind": "protocols.gdw1376.data",
    "CurveRequest": "protocols.gdw1376.data",
    "DailyReading": "protocols.gdw1376.data",
    "EnergyReading": "protocols.gdw1376.data",
    "EventRecords": "protocols.gdw1376.data",
    "EventRequest": "protocols.gdw1376.data",
    "ForwardReply": "protocols.gdw1376.data",
    "ForwardRequest": "protocols.gdw1376.data",
    "GroupMember": "protocols.gdw1376.data",
    "PhaseSnapshot": "protocols.gdw1376.data",
    "PowerEvent": "protocols.gdw1376.data",
    "RawData": "protocols.gdw1376.data",
    "RawEvent": "protocols.gdw1376.data",
    "Timeout": "protocols.gdw1376.data",
    "TotalGroup": "protocols.gdw1376.data",
    "UnitConfirmation": "protocols.gdw1376.data",
    "ChecksumError": "protocols.gdw1376.errors",
    "EncodeError": "protocols.gdw1376.errors",
    "FramingError": "protocols.gdw1376.errors",
    "GDW1376Error": "protocols.gdw1376.errors",
    "PayloadError": "protocols.gdw1376.errors",
    "TruncatedFrame": "protocols.gdw1376.errors",
    "ALL_POINTS": "protocols.gdw1376.fields",
    "Afn": "protocols.gdw1376.fields",
    "Control": "protocols.gdw1376.fields",
    "Function": "protocols.gdw1376.fields",
    "Seq": "protocols.gdw1376.fields",
    "Tp": "protocols.gdw1376.fields",
    "Frame": "protocols.gdw1376.frame",
    "Stop": "protocols.gdw1376.frame",
    "Unit": "protocols.gdw1376.frame",
    "decode": "protocols.gdw1376.frame",
    "encode": "protocols.gdw1376.frame",
    "unit": "protocols.gdw1376.frame",
    "Deframer": "protocols.gdw1376.link",
    "looks_like_frame": "protocols.gdw1376.link",
    "parse_link": "protocols.gdw1376.link",
}


def __getattr__(name: str) -> object:
    """``name`` from the module that defines it, imported on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


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
