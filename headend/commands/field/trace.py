"""``--trace`` of the field commands: every frame sent and received on stderr, one line each: the time
(UTC, milliseconds), the direction, the bytes in hex and what the frame says (the stdout of
``--json`` stays one JSON object). On a concentrator link the Q/GDW 1376.1 frames are printed, a DL/T
645 frame forwarded inside AFN 10 F1 summarised with them. A frame printed here can be given to
``headend decode`` as is."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from headend.transport.channel import Channel, FrameTap
from headend.transport.concentrator import ConcentratorLink
from headend.transport.modbus import ModbusChannel
from protocols import gdw1376
from protocols.dlt645 import DLT645Error, decode

ARROWS = {"tx": ">>", "rx": "<<", "timeout": "!!"}


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
        typer.echo(f"{stamp} {ARROWS[direction]} {frame.hex(' ').upper() or '-'}  {said}", err=True)

    return tap


def attach(channel: Channel | ModbusChannel | ConcentratorLink, protocol: str) -> None:
    """Print the frames of ``channel`` from now on (a concentrator link's: its 1376.1 frames)."""
    channel.tap = frame_printer("gdw1376" if isinstance(channel, ConcentratorLink) else protocol)
