"""Decoding of whole frames: edition detection and the data field of every function code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from protocols.dlt645 import functions as fc
from protocols.dlt645.dataitems import lookup
from protocols.dlt645.errors import PayloadError
from protocols.dlt645.formats import BaudWord, Digits, Timestamp
from protocols.dlt645.frame import Frame
from protocols.dlt645.link import LinkFrame, address_from_wire, parse_link

DATETIME6 = Timestamp("YYMMDDhhmmss")
PROFILE_START = Timestamp("YYMMDDhhmm")
OPERATOR = Digits(4)
BAUD = BaudWord()


def decode(raw: bytes, edition: int | None = None) -> Frame:
    """Decode one frame (leading FE allowed) into a ``Frame``; raises a ``DLT645Error`` on bad input.

    The edition is detected from the function code unless given. Unknown data identifiers decode
    to raw bytes; a value that does not fit its format is kept raw with ``fields["value_error"]``.
    """
    link = parse_link(raw)
    if edition is None:
        edition = detect_edition(link)
    frame = Frame(edition, link.address, link.control, link.payload)
    function = link.control & 0x1F
    names = fc.FUNCTIONS_2007 if edition == 2007 else fc.FUNCTIONS_1997
    frame.fields["function_name"] = names.get(function)
    if frame.is_abnormal:
        _abnormal(frame)
        return frame
    parser = (PARSERS_2007 if edition == 2007 else PARSERS_1997).get(function)
    if parser is not None:
        parser(frame)
    elif link.payload:
        frame.value = link.payload
    return frame


def detect_edition(link: LinkFrame) -> int:
    """2007 or 1997, from the function code (and, for 0x03, the data field's shape)."""
    function = link.control & 0x1F
    if function == fc.SECURITY:
        payload = link.payload
        if not link.control & 0x80:
            return 2007 if payload else 1997
        if link.control & 0x40:
            return 2007 if len(payload) == 2 else 1997
        return 2007 if len(payload) >= 4 and payload[3] == 0x07 else 1997
    return 1997 if function in fc.ONLY_1997 else 2007


def _di(payload: bytes, size: int) -> str:
    if len(payload) < size:
        raise PayloadError(f"data field of {len(payload)} bytes is too short for a {2 * size}-digit DI")
    return payload[size - 1 :: -1].hex().upper()


def _need(frame: Frame, size: int, what: str) -> bytes:
    if len(frame.payload) != size:
        raise PayloadError(f"{what} takes {size} data bytes, frame has {len(frame.payload)}")
    return frame.payload


def _set_value(frame: Frame, data: bytes) -> None:
    """Decode ``data`` with the DI table into frame.value (raw bytes if unknown or malformed)."""
    item = lookup(frame.di, frame.edition) if frame.di else None
    if item is None:
        frame.value = bytes(data)
        return
    frame.name, frame.unit = item.name, item.unit
    try:
        frame.value = item.decode(data)
    except PayloadError as exc:
        frame.value = bytes(data)
        frame.fields["value_error"] = str(exc)


def _name_only(frame: Frame) -> None:
    item = lookup(frame.di, frame.edition) if frame.di else None
    if item is not None:
        frame.name, frame.unit = item.name, item.unit


def _auth_fields(frame: Frame, data: bytes, with_operator: bool) -> int:
    """Password level, password and operator code starting at data[0]; returns bytes consumed."""
    size = 8 if with_operator else 4
    if len(data) < size:
        raise PayloadError(
            f"data field too short for password{' and operator code' if with_operator else ''}"
        )
    frame.fields["password_level"] = data[0]
    frame.fields["password"] = data[3:0:-1].hex().upper()
    if with_operator:
        frame.fields["operator"] = OPERATOR.decode_bytes(data[4:8])
    return size


def _read(frame: Frame) -> None:
    size = 4 if frame.edition == 2007 else 2
    frame.di = _di(frame.payload, size)
    data = frame.payload[size:]
    if not frame.is_response:
        _name_only(frame)
        _read_request_params(frame, data)
        return
    if frame.has_followup:
        _fragment(frame, data)
    else:
        _set_value(frame, data)


def _read_request_params(frame: Frame, params: bytes) -> None:
    """Load-profile request parameters: NN block count, optionally followed by mm hh DD MM YY."""
    if not params:
        return
    if frame.edition == 2007 and len(params) in (1, 6):
        frame.fields["count"] = int(f"{params[0]:02X}") if f"{params[0]:02X}".isdigit() else params[0]
        if len(params) == 6:
            frame.fields["start"] = PROFILE_START.decode_bytes(params[1:6])
    else:
        frame.fields["params"] = params.hex().upper()


def _fragment(frame: Frame, data: bytes) -> None:
    """Part of a multi-frame reply: keep the raw data; ``assemble_read`` decodes the whole."""
    _name_only(frame)
    frame.value = bytes(data)
    frame.fields["fragment"] = True


def _read_followup(frame: Frame) -> None:
    size = 4 if frame.edition == 2007 else 2
    frame.di = _di(frame.payload, size)
    rest = frame.payload[size:]
    if frame.edition == 2007:
        if not rest:
            raise PayloadError("follow-up frame lacks its sequence number")
        frame.seq = rest[-1]
        rest = rest[:-1]
    if frame.is_response:
        _fragment(frame, rest)
    else:
        _name_only(frame)


def _reread(frame: Frame) -> None:
    if frame.is_response:
        frame.di = _di(frame.payload, 2)
        _set_value(frame, frame.payload[2:])


def _read_address(frame: Frame) -> None:
    if frame.is_response:
        frame.name = "comm_address"
        frame.value = address_from_wire(_need(frame, 6, "read-address reply"))


def _write(frame: Frame) -> None:
    if frame.is_response:
        return
    size = 4 if frame.edition == 2007 else 2
    frame.di = _di(frame.payload, size)
    with_operator = frame.edition == 2007
    used = _auth_fields(frame, frame.payload[size:], with_operator)
    data = frame.payload[size + used :]
    level = frame.fields["password_level"]
    if frame.edition == 2007 and level in fc.ENCRYPTED_LEVELS:
        frame.fields["encrypted"] = fc.ENCRYPTED_LEVELS[level]
        _name_only(frame)
        frame.value = bytes(data)
        return
    _set_value(frame, data)


def _write_address(frame: Frame) -> None:
    if not frame.is_response:
        frame.name = "new_address"
        frame.value = address_from_wire(_need(frame, 6, "write-address request"))


def _time_sync(frame: Frame) -> None:
    frame.name = "time_sync"
    frame.value = DATETIME6.decode_bytes(_need(frame, 6, "time sync"))


def _freeze(frame: Frame) -> None:
    if not frame.is_response:
        frame.name = "freeze_time"
        frame.value = _need(frame, 4, "freeze request")[::-1].hex().upper()


def _change_baud(frame: Frame) -> None:
    frame.name = "baud"
    frame.unit = "bit/s"
    word = _need(frame, 1, "baud feature word")
    try:
        frame.value = BAUD.decode_bytes(word)
    except PayloadError as exc:
        frame.value, frame.unit = word[0], None
        frame.fields["value_error"] = str(exc)


def _change_password(frame: Frame) -> None:
    payload = frame.payload
    if frame.is_response:
        frame.fields["password_level"] = _need(frame, 4, "change-password reply")[0]
        frame.fields["password"] = payload[3:0:-1].hex().upper()
        return
    if frame.edition == 2007:
        frame.di = _di(payload, 4)
        frame.fields["new_level"] = payload[0] - 1
        payload = payload[4:]
    if len(payload) != 8:
        raise PayloadError(
            f"change-password request needs old and new password (8 bytes), got {len(payload)}"
        )
    frame.fields["old_level"] = payload[0]
    frame.fields["old_password"] = payload[3:0:-1].hex().upper()
    frame.fields["new_password_level"] = payload[4]
    frame.fields["new_password"] = payload[7:4:-1].hex().upper()


def _password_command(frame: Frame) -> None:
    if not frame.is_response:
        with_operator = frame.edition == 2007
        _auth_fields(frame, _need(frame, 8 if with_operator else 4, "command"), with_operator)


def _event_clear(frame: Frame) -> None:
    if not frame.is_response:
        _auth_fields(frame, _need(frame, 12, "event-clear request"), True)
        frame.fields["event_di"] = frame.payload[11:7:-1].hex().upper()


def _remote_control(frame: Frame) -> None:
    if frame.is_response:
        return
    payload = frame.payload
    if not payload:
        raise PayloadError("remote-control request has no data")
    level = payload[0]
    if level in fc.ENCRYPTED_LEVELS:
        _auth_fields(frame, payload, True)
        frame.name = "remote_control_encrypted"
        frame.fields["encrypted"] = fc.ENCRYPTED_LEVELS[level]
        frame.fields["ciphertext"] = payload[8:].hex().upper()
        return
    _auth_fields(frame, _need(frame, 16, "plaintext remote control"), True)
    code = payload[8]
    frame.name = "remote_control"
    frame.value = fc.ACTIONS_BY_CODE.get(code, f"unknown_0x{code:02X}")
    frame.fields["action"] = frame.value
    frame.fields["action_code"] = code
    frame.fields["n2"] = payload[9]
    frame.fields["expiry"] = DATETIME6.decode_bytes(payload[10:16])


def _multifunction(frame: Frame) -> None:
    mode = _need(frame, 1, "multi-function output")[0]
    frame.name = "multifunction_output"
    frame.value = fc.MULTIFUNCTION_MODES.get(mode, f"unknown_0x{mode:02X}")


def _security(frame: Frame) -> None:
    frame.di = _di(frame.payload, 4)
    frame.name = "security_authentication"
    frame.value = frame.payload[4:]


def _abnormal(frame: Frame) -> None:
    payload = frame.payload
    if frame.edition == 2007 and frame.function == fc.SECURITY and len(payload) == 2:
        word = int.from_bytes(payload, "little")
        frame.fields["serr"] = word
        frame.error_flags = [f"serr_bit{bit}" for bit in range(16) if word >> bit & 1]
        return
    if len(payload) != 1:
        raise PayloadError(f"abnormal reply must carry one error byte, frame has {len(payload)}")
    frame.fields["error_word"] = payload[0]
    frame.error_flags = fc.error_flags(payload[0], frame.edition)


Parser = Callable[[Frame], None]

PARSERS_2007: dict[int, Parser] = {
    fc.SECURITY: _security,
    fc.TIME_SYNC: _time_sync,
    fc.READ: _read,
    fc.READ_FOLLOWUP: _read_followup,
    fc.READ_ADDRESS: _read_address,
    fc.WRITE: _write,
    fc.WRITE_ADDRESS: _write_address,
    fc.FREEZE: _freeze,
    fc.CHANGE_BAUD: _change_baud,
    fc.CHANGE_PASSWORD: _change_password,
    fc.DEMAND_RESET: _password_command,
    fc.METER_CLEAR: _password_command,
    fc.EVENT_CLEAR: _event_clear,
    fc.REMOTE_CONTROL: _remote_control,
    fc.MULTIFUNCTION_OUTPUT: _multifunction,
}
PARSERS_1997: dict[int, Parser] = {
    fc.READ_1997: _read,
    fc.READ_FOLLOWUP_1997: _read_followup,
    fc.REREAD_1997: _reread,
    fc.WRITE_1997: _write,
    fc.TIME_SYNC: _time_sync,
    fc.WRITE_ADDRESS_1997: _write_address,
    fc.CHANGE_BAUD_1997: _change_baud,
    fc.CHANGE_PASSWORD_1997: _change_password,
    fc.DEMAND_RESET_1997: _password_command,
}


def _data_part(frame: Frame) -> bytes:
    """The value bytes of a read reply frame (without DI and follow-up sequence number)."""
    size = 4 if frame.edition == 2007 else 2
    end = -1 if frame.edition == 2007 and frame.function == fc.READ_FOLLOWUP else None
    return frame.payload[size:end]


def assemble_read(frames: Sequence[Frame]) -> tuple[str | None, Any]:
    """Join the data of a multi-frame read reply (first reply + follow-ups) and decode it.

    Returns ``(di, value)``; raises PayloadError if the frames mix DIs or the joined data is malformed.
    """
    if not frames:
        raise PayloadError("no frames to assemble")
    di = frames[0].di
    parts: list[bytes] = []
    for frame in frames:
        if frame.di != di:
            raise PayloadError(f"follow-up frame for DI {frame.di} inside a reply for {di}")
        if frame.is_abnormal:
            raise PayloadError(f"abnormal reply inside a multi-frame read: {frame.error_flags}")
        parts.append(_data_part(frame))
    data = b"".join(parts)
    item = lookup(di, frames[0].edition) if di else None
    if item is None:
        return di, data
    return di, item.decode(data)


__all__: list[Any] = ["assemble_read", "decode", "detect_edition"]
