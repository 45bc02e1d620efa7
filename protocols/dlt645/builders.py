"""Request builders (master side) and reply builders (meter side) for both editions.

Requests carry the 4×FE preamble by default. Every write (control, clock and parameter writes,
passwords, demand/meter/event clear, baud, freeze, multi-function output) is addressed to exactly one
meter (``unicast_address``); the time broadcast and the one-meter-line address commands are the only
requests built for a wildcard or broadcast address. Passwords are 6 digits (P2 P1 P0 as written on the
meter's label), operator codes 8 digits; both are arguments, never defaults.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from protocols.dlt645 import functions as fc
from protocols.dlt645.dataitems import di_to_wire, lookup
from protocols.dlt645.errors import EncodeError
from protocols.dlt645.formats import BaudWord, Digits, Timestamp
from protocols.dlt645.link import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    address_to_wire,
    encode_frame,
    unicast_address,
)

DATETIME6 = Timestamp("YYMMDDhhmmss")
PROFILE_START = Timestamp("YYMMDDhhmm")
PASSWORD = Digits(3)
OPERATOR = Digits(4)
BAUD = BaudWord()
MAX_READ_DATA = 200


def _edition(edition: int) -> int:
    if edition not in (2007, 1997):
        raise EncodeError(f"edition must be 2007 or 1997, got {edition!r}")
    return edition


def _auth(password_level: int, password: str, operator: str | None = None) -> bytes:
    """PA P0 P1 P2 [C0 C1 C2 C3]."""
    if not 0 <= int(password_level) <= 0xFF:
        raise EncodeError(f"password level {password_level!r} out of range")
    data = bytes((int(password_level),)) + PASSWORD.encode_value(password)
    if operator is not None:
        data += OPERATOR.encode_value(operator)
    return data


def encode_value(di: str, value: Any, edition: int = 2007) -> bytes:
    """The data bytes of ``value`` for ``di``, encoded with the DI catalogue."""
    item = lookup(di, edition)
    if item is None:
        raise EncodeError(f"DI {di} is not in the {edition} catalogue; pass raw=bytes")
    return item.encode(value)


def build_read(address: str, di: str, edition: int = 2007) -> bytes:
    """A read request for one data identifier (2007: 0x11, 1997: 0x01), with 4×FE preamble."""
    function = fc.READ if _edition(edition) == 2007 else fc.READ_1997
    return encode_frame(address, function, di_to_wire(di, edition))


def build_read_profile(address: str, di: str, count: int, start: dt.datetime | None = None) -> bytes:
    """A 2007 load-profile read: DI + NN blocks [+ start time mm hh DD MM YY] (modes 00/02 and 01)."""
    if not 1 <= count <= 99:
        raise EncodeError(f"load-profile block count must be 1..99, got {count}")
    params = bytes.fromhex(f"{count:02d}")
    if start is not None:
        params += PROFILE_START.encode_value(start)
    return encode_frame(address, fc.READ, di_to_wire(di) + params)


def build_read_followup(address: str, di: str, seq: int, edition: int = 2007) -> bytes:
    """A follow-up read (2007: 0x12 with DI + SEQ; 1997: 0x02 with DI)."""
    if _edition(edition) == 2007:
        if not 0 <= seq <= 0xFF:
            raise EncodeError(f"follow-up sequence {seq} out of range")
        return encode_frame(address, fc.READ_FOLLOWUP, di_to_wire(di) + bytes((seq,)))
    return encode_frame(address, fc.READ_FOLLOWUP_1997, di_to_wire(di, 1997))


def build_read_address() -> bytes:
    """2007 read communication address (0x13) to AA…AA: only safe with one meter on the segment."""
    return encode_frame(WILDCARD_ADDRESS, fc.READ_ADDRESS)


def build_write(
    address: str,
    di: str,
    value: Any = None,
    *,
    password_level: int,
    password: str,
    operator: str | None = None,
    raw: bytes | None = None,
    edition: int = 2007,
) -> bytes:
    """A write (2007 0x14: DI + PA P + operator + data; 1997 0x04: DI + PA P + data).

    ``value`` is encoded with the DI table; pass ``raw`` for items the table lacks.
    """
    address = unicast_address(address)
    if raw is None:
        raw = encode_value(di, value, edition)
    if _edition(edition) == 2007:
        if operator is None:
            raise EncodeError("a 2007 write needs an operator code")
        return encode_frame(
            address, fc.WRITE, di_to_wire(di) + _auth(password_level, password, operator) + raw
        )
    return encode_frame(address, fc.WRITE_1997, di_to_wire(di, 1997) + _auth(password_level, password) + raw)


def build_write_address(new_address: str, edition: int = 2007) -> bytes:
    """Write the communication address (2007 0x15 to AA…AA; 1997 0x0A to 99…99)."""
    target = WILDCARD_ADDRESS if _edition(edition) == 2007 else BROADCAST_ADDRESS
    function = fc.WRITE_ADDRESS if edition == 2007 else fc.WRITE_ADDRESS_1997
    return encode_frame(target, function, address_to_wire(new_address))


def build_time_sync(when: dt.datetime, address: str = BROADCAST_ADDRESS) -> bytes:
    """Broadcast time sync (0x08, both editions): ss mm hh DD MM YY, meter-local time."""
    return encode_frame(address, fc.TIME_SYNC, DATETIME6.encode_value(when))


def build_freeze(address: str, when: str = "99999999") -> bytes:
    """Freeze (0x16): ``when`` is MMDDhhmm with 99 as wildcard (99999999 = freeze now)."""
    address = unicast_address(address)
    text = when.strip()
    if len(text) != 8 or not text.isdigit():
        raise EncodeError(f"freeze time must be 8 digits MMDDhhmm (99 = any), got {when!r}")
    return encode_frame(address, fc.FREEZE, bytes.fromhex(text)[::-1])


def build_change_baud(address: str, baud: int, edition: int = 2007) -> bytes:
    """Change the baud rate (2007 0x17 / 1997 0x0C) with the bitmap feature word."""
    address = unicast_address(address)
    function = fc.CHANGE_BAUD if _edition(edition) == 2007 else fc.CHANGE_BAUD_1997
    return encode_frame(address, function, BAUD.encode_value(baud))


def build_change_password(
    address: str,
    *,
    old_level: int,
    old_password: str,
    new_level: int,
    new_password: str,
    edition: int = 2007,
) -> bytes:
    """Change a password (2007 0x18 with DI 04000C(level+1); 1997 0x0F)."""
    address = unicast_address(address)
    data = _auth(old_level, old_password) + _auth(new_level, new_password)
    if _edition(edition) == 2007:
        if not 0 <= new_level <= 9:
            raise EncodeError(f"password level must be 0..9, got {new_level}")
        return encode_frame(address, fc.CHANGE_PASSWORD, di_to_wire(f"04000C{new_level + 1:02X}") + data)
    return encode_frame(address, fc.CHANGE_PASSWORD_1997, data)


def build_demand_reset(
    address: str, *, password_level: int, password: str, operator: str | None = None, edition: int = 2007
) -> bytes:
    """Maximum-demand reset (2007 0x19 with operator; 1997 0x10)."""
    address = unicast_address(address)
    if _edition(edition) == 2007:
        if operator is None:
            raise EncodeError("a 2007 demand reset needs an operator code")
        return encode_frame(address, fc.DEMAND_RESET, _auth(password_level, password, operator))
    return encode_frame(address, fc.DEMAND_RESET_1997, _auth(password_level, password))


def build_meter_clear(address: str, *, password_level: int, password: str, operator: str) -> bytes:
    """Meter clear (0x1A): destructive, programming mode on most meters."""
    address = unicast_address(address)
    return encode_frame(address, fc.METER_CLEAR, _auth(password_level, password, operator))


def build_event_clear(
    address: str, *, password_level: int, password: str, operator: str, event_di: str = "FFFFFFFF"
) -> bytes:
    """Event clear (0x1B); ``FFFFFFFF`` clears all events, DI0 = FF one event type."""
    address = unicast_address(address)
    return encode_frame(
        address, fc.EVENT_CLEAR, _auth(password_level, password, operator) + di_to_wire(event_di)
    )


def build_control(
    address: str, action: str, *, password_level: int, password: str, operator: str, expiry: dt.datetime
) -> bytes:
    """Plaintext remote control (0x1C): trip, close_allowed, close, alarm, keep_power, ... with expiry."""
    address = unicast_address(address)
    try:
        code = fc.CONTROL_ACTIONS[action]
    except KeyError:
        raise EncodeError(
            f"unknown control action {action!r}; known: {', '.join(fc.CONTROL_ACTIONS)}"
        ) from None
    data = _auth(password_level, password, operator) + bytes((code, 0)) + DATETIME6.encode_value(expiry)
    return encode_frame(address, fc.REMOTE_CONTROL, data)


def build_multifunction_output(address: str, mode: int) -> bytes:
    """Multi-function terminal output (0x1D): 0 second pulse, 1 demand period, 2 time-slot switch."""
    address = unicast_address(address)
    if mode not in fc.MULTIFUNCTION_MODES:
        raise EncodeError(f"multi-function output mode must be one of {sorted(fc.MULTIFUNCTION_MODES)}")
    return encode_frame(address, fc.MULTIFUNCTION_OUTPUT, bytes((mode,)))


def build_response(
    address: str,
    function: int,
    data: bytes = b"",
    *,
    edition: int = 2007,
    followup: bool = False,
    preamble: int = 0,
) -> bytes:
    """A normal reply (control = 0x80 | function, | 0x20 when more frames follow)."""
    _edition(edition)
    control = 0x80 | (function & 0x1F) | (0x20 if followup else 0)
    return encode_frame(address, control, data, preamble)


def build_abnormal(
    address: str, function: int, flags: Iterable[str] | int, *, edition: int = 2007, preamble: int = 0
) -> bytes:
    """An abnormal reply (control = 0xC0 | function) carrying the error word for ``flags``."""
    word = fc.error_word(flags, _edition(edition))
    return encode_frame(address, 0xC0 | (function & 0x1F), bytes((word,)), preamble)


def build_read_response(
    address: str,
    di: str,
    value: Any = None,
    *,
    edition: int = 2007,
    followup: bool = False,
    seq: int | None = None,
    preamble: int = 0,
    raw: bytes | None = None,
) -> bytes:
    """A read reply: DI + value encoded with the DI table (or ``raw``); with ``seq`` a follow-up reply."""
    if raw is None:
        raw = encode_value(di, value, edition)
    if _edition(edition) == 2007:
        function = fc.READ if seq is None else fc.READ_FOLLOWUP
        tail = b"" if seq is None else bytes((seq,))
        return build_response(
            address, function, di_to_wire(di) + raw + tail, followup=followup, preamble=preamble
        )
    function = fc.READ_1997 if seq is None else fc.READ_FOLLOWUP_1997
    return build_response(
        address, function, di_to_wire(di, 1997) + raw, edition=1997, followup=followup, preamble=preamble
    )


def build_read_reply_frames(
    address: str,
    di: str,
    value: Any = None,
    *,
    edition: int = 2007,
    max_data: int = MAX_READ_DATA,
    preamble: int = 0,
    raw: bytes | None = None,
) -> list[bytes]:
    """All frames of a possibly long read reply: [reply to the read, reply to follow-up 1, 2, ...].

    Data longer than ``max_data`` bytes per frame is split; every frame but the last has the
    follow-up flag (2007: B1, B2…, 92; 1997: A1, A2…, 82).
    """
    if raw is None:
        raw = encode_value(di, value, edition)
    overhead = 5 if edition == 2007 else 2
    chunk = max(1, max_data - overhead)
    pieces = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    frames = []
    for index, piece in enumerate(pieces):
        more = index < len(pieces) - 1
        frames.append(
            build_read_response(
                address,
                di,
                raw=piece,
                edition=edition,
                followup=more,
                seq=index if index else None,
                preamble=preamble,
            )
        )
    return frames
