"""``--trace`` of the field commands: every frame sent and received on stderr, one line each: the time
(UTC, milliseconds), the direction, the bytes in hex and what the frame says (the stdout of
``--json`` stays one JSON object). On a concentrator link the Q/GDW 1376.1 frames are printed, a DL/T
645 frame forwarded inside AFN 10 F1 summarised with them. Passwords never reach the terminal: the
password bytes of a DL/T 645 write (0x14, 0x18 to 0x1C) and a concentrator's PW (AFN 01/04/05/06/0F/10
downlink) are printed as ``**``. Every other frame printed here can be given to ``headend decode`` as
is."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from headend.transport.channel import Channel, FrameTap
from headend.transport.concentrator import ConcentratorLink
from headend.transport.modbus import ModbusChannel
from protocols import gdw1376
from protocols.dlt645 import DLT645Error, decode

ARROWS = {"tx": ">>", "rx": "<<", "timeout": "!!"}
# DL/T 645 requests that carry a password: function -> (offset, length) of the secret in the data field
# (password level and password, plus the new password of 0x18)
DLT645_SECRETS = {0x14: (4, 4), 0x18: (4, 8), 0x19: (0, 4), 0x1A: (0, 4), 0x1B: (0, 4), 0x1C: (0, 4)}


def dlt645_secret_positions(frame: bytes) -> set[int]:
    """Indexes of the password bytes of a DL/T 645 request in ``frame`` (none for other frames)."""
    start = len(frame) - len(frame.lstrip(b"\xfe"))
    head = frame[start : start + 10]
    if len(head) < 10 or head[0] != 0x68 or head[7] != 0x68 or head[8] not in DLT645_SECRETS:
        return set()
    offset, length = DLT645_SECRETS[head[8]]
    data = start + 10
    return set(range(data + offset, min(data + offset + length, data + head[9], len(frame))))


def gdw1376_secret_positions(frame: bytes) -> set[int]:
    """Indexes of a 1376.1 downlink frame's PW and of the passwords of DL/T 645 frames it forwards."""
    try:
        decoded = gdw1376.decode(frame)
    except (gdw1376.GDW1376Error, ValueError):
        return set()
    hidden: set[int] = set()
    if decoded.pw is not None:
        _pw, ec, tp = gdw1376.frame.aux_lengths(decoded.control, decoded.afn, decoded.seq)
        end = len(frame) - 2 - tp - ec
        hidden.update(range(end - len(decoded.pw), end))
    for _pn, _fn, value in decoded.items():
        if isinstance(value, gdw1376.ForwardRequest) and value.content:
            at = frame.find(value.content)
            if at >= 0:
                hidden.update(at + i for i in dlt645_secret_positions(value.content))
    return hidden


def shown_hex(frame: bytes, protocol: str) -> str:
    """The frame in hex with its password bytes as ``**``."""
    if protocol == "modbus":
        secrets: set[int] = set()
    elif protocol == "gdw1376":
        secrets = gdw1376_secret_positions(frame)
    else:
        secrets = dlt645_secret_positions(frame)
    return " ".join("**" if i in secrets else f"{b:02X}" for i, b in enumerate(frame))


def dlt645_summary(frame: bytes) -> str:
    """What a DL/T 645 frame says: address, function, data identifier and value or error."""
    try:
        decoded = decode(frame)
    except (DLT645Error, ValueError) as exc:
        return f"not a valid DL/T 645 frame ({exc})"
    data = decoded.to_json()
    parts = [f"address {data['address']}", f"function 0x{data['function']:02X}", str(data["direction"])]
    if data["di"]:
        item = f"DI {data['di']}" + (f" {data['name']}" if data["name"] else "")
        if data["value"] is not None:
            item += f" = {data['value']}" + (f" {data['unit']}" if data["unit"] else "")
        parts.append(item)
    if data["error"]:
        parts.append("error " + ", ".join(data["error"]))
    return ", ".join(parts)


def modbus_summary(frame: bytes) -> str:
    """What a Modbus ADU says: unit (RTU) or transaction and unit (TCP), and the function."""
    tcp = len(frame) >= 8 and frame[2:4] == b"\x00\x00"  # MBAP header: protocol id 0
    pdu = frame[7:] if tcp else frame[1:]
    if not pdu:
        return "short frame"
    head = f"transaction {int.from_bytes(frame[0:2], 'big')}, unit {frame[6]}" if tcp else f"unit {frame[0]}"
    function = pdu[0]
    if function & 0x80 and len(pdu) > 1:
        return f"{head}, function 0x{function & 0x7F:02X}, exception {pdu[1]}"
    return f"{head}, function 0x{function:02X}"


def gdw1376_summary(frame: bytes) -> str:
    """What a 1376.1 frame says: terminal, direction, AFN, SEQ, its units, and a forwarded DL/T 645
    frame (AFN 10 F1) summarised inside."""
    try:
        decoded = gdw1376.decode(frame)
    except (gdw1376.GDW1376Error, ValueError) as exc:
        return f"not a valid 1376.1 frame ({exc})"
    parts = [
        f"terminal {decoded.address.key}",
        "up" if decoded.up else "down",
        f"AFN {decoded.afn:02X} {decoded.afn_name}",
        f"SEQ {decoded.seq.seq}",
    ]
    items = list(decoded.items())
    if items:
        parts.append(" ".join(f"p{pn} F{fn}" for pn, fn, _ in items))
    for _pn, _fn, value in items:
        if isinstance(value, gdw1376.ForwardRequest | gdw1376.ForwardReply):
            inner = dlt645_summary(value.content) if value.content else "no reply from the meter"
            parts.append(f"port {value.port}: [{inner}]")
    return ", ".join(parts)


def frame_printer(protocol: str) -> FrameTap:
    """A tap that prints each frame of ``protocol`` (``modbus``, ``gdw1376`` or DL/T 645) on stderr."""
    summaries = {"modbus": modbus_summary, "gdw1376": gdw1376_summary}
    summary = summaries.get(protocol, dlt645_summary)

    def tap(direction: str, frame: bytes) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        said = summary(frame) if frame else "no reply in time"
        typer.echo(f"{stamp} {ARROWS[direction]} {shown_hex(frame, protocol) or '-'}  {said}", err=True)

    return tap


def attach(channel: Channel | ModbusChannel | ConcentratorLink, protocol: str) -> None:
    """Print the frames of ``channel`` from now on (a concentrator link's: its 1376.1 frames)."""
    channel.tap = frame_printer("gdw1376" if isinstance(channel, ConcentratorLink) else protocol)
