"""Modbus RTU framing (pure): requests, CRC-16, and a deframer that knows the reply it expects.

Used where Modbus RTU meters share a raw serial bus (or a transparent serial server) with DL/T 645
meters, so that one channel owns the line for both protocols.
"""

from __future__ import annotations

import struct

READ_FUNCTIONS = (3, 4)
WRITE_FUNCTIONS = (5, 6, 16)


class RtuError(ValueError):
    """A Modbus RTU frame that cannot be built or parsed."""


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


def build_request(
    unit: int, function: int, address: int, count: int = 1, values: list[int] | None = None
) -> bytes:
    """A read (3/4: ``count`` registers) or write (5 coil, 6 register, 16 registers) request."""
    if not 0 <= unit <= 247:
        raise RtuError(f"unit id {unit} out of range 0..247")
    if function in READ_FUNCTIONS:
        return _with_crc(struct.pack(">BBHH", unit, function, address, count))
    values = values or []
    if function == 5:
        return _with_crc(struct.pack(">BBHH", unit, 5, address, 0xFF00 if values and values[0] else 0))
    if function == 6:
        return _with_crc(struct.pack(">BBHH", unit, 6, address, values[0] if values else 0))
    if function == 16:
        return _with_crc(
            struct.pack(">BBHHB", unit, 16, address, len(values), 2 * len(values))
            + b"".join(struct.pack(">H", v) for v in values)
        )
    raise RtuError(f"unsupported Modbus function {function}")


def reply_size(function: int, count: int) -> int:
    """Bytes of a normal reply."""
    return 5 + 2 * count if function in READ_FUNCTIONS else 8


class RtuDeframer:
    """Finds the reply of ``unit`` to ``function`` (normal or exception) in a byte stream."""

    def __init__(self, unit: int, function: int, count: int) -> None:
        self.unit = unit
        self.function = function
        self.size = reply_size(function, count)
        self._buf = bytearray()
        self._echo: bytes | None = None
        self.checksum_errors = 0
        self.noise_bytes = 0

    def expect_echo(self, request: bytes) -> None:
        self._echo = bytes(request)

    def reset(self) -> None:
        """Discard buffered bytes (e.g. a truncated reply, after a timeout); counted as noise."""
        self.noise_bytes += len(self._buf)
        self._buf.clear()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete replies (CRC verified) now available; skips noise and the echo of the request."""
        buf = self._buf
        buf += chunk
        if self._echo and buf.startswith(self._echo):
            del buf[: len(self._echo)]
            self._echo = None
        out = []
        while len(buf) >= 5:
            if buf[0] == self.unit and buf[1] in (self.function, self.function | 0x80):
                size = 5 if buf[1] & 0x80 else self.size
                if len(buf) < size:
                    break
                frame = bytes(buf[:size])
                if crc16(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]:
                    del buf[:size]
                    out.append(frame)
                    continue
                self.checksum_errors += 1
            del buf[0]
            self.noise_bytes += 1
        return out


def parse_reply(frame: bytes) -> list[int] | int:
    """Registers (3/4) or the echoed value (5/6/16) of a normal reply; an int exception code otherwise.

    Exception replies return the code as a negative number, e.g. -2 for "illegal data address".
    """
    function = frame[1]
    if function & 0x80:
        return -frame[2]
    if function in READ_FUNCTIONS:
        count = frame[2] // 2
        return list(struct.unpack(f">{count}H", frame[3 : 3 + 2 * count]))
    return [struct.unpack(">H", frame[4:6])[0]]
