"""``--trace`` of the field commands: every frame sent and received on stderr, one line each: the time
(UTC, milliseconds), the direction, the bytes in hex and what the frame says (the stdout of
``--json`` stays one JSON object). A frame printed here can be given to ``headend decode`` as is."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from headend.transport.channel import Channel, FrameTap
from headend.transport.modbus import ModbusChannel
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


def frame_printer(protocol: str) -> FrameTap:
    """A tap that prints each frame of ``protocol`` on stderr."""
    summary = modbus_summary if protocol == "modbus" else dlt645_summary

    def tap(direction: str, frame: bytes) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        said = summary(frame) if frame else "no reply in time"
        typer.echo(f"{stamp} {ARROWS[direction]} {frame.hex(' ').upper() or '-'}  {said}", err=True)

    return tap


def attach(channel: object, protocol: str) -> bool:
    """Print the frames of ``channel`` from now on; False for a link that carries them inside other
    frames (a concentrator), which is not traced."""
    if not isinstance(channel, Channel | ModbusChannel):
        return False
    channel.tap = frame_printer(protocol)
    return True
