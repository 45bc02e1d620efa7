"""DL/T 645 link layer (both editions): framing, ±0x33 scrambling, checksum, addresses, deframing.

Frame: ``FE* 68 A0..A5 68 C L DATA CS 16``. The address is 12 BCD digits sent least-significant byte
first, data bytes travel +0x33, CS is the byte sum from the first 68 through the last data byte.
Frames are delimited by the length byte, never by scanning for 0x16.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from protocols.dlt645.errors import ChecksumError, EncodeError, FramingError, TruncatedFrame

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
HEADER_LEN = 10  # 68 A0..A5 68 C L
MIN_FRAME = 12  # header + CS + 16 with no data
WILDCARD_ADDRESS = "AAAAAAAAAAAA"
BROADCAST_ADDRESS = "999999999999"

SCRAMBLE = bytes((b + 0x33) & 0xFF for b in range(256))
UNSCRAMBLE = bytes((b - 0x33) & 0xFF for b in range(256))

DIR_RESPONSE = 0x80
ABNORMAL = 0x40
FOLLOWUP = 0x20
FUNCTION_MASK = 0x1F


def scramble(data: bytes) -> bytes:
    """Add 0x33 to every byte (what the sender applies to the data field)."""
    return data.translate(SCRAMBLE)


def unscramble(data: bytes) -> bytes:
    """Subtract 0x33 from every byte (what the receiver applies to the data field)."""
    return data.translate(UNSCRAMBLE)


@lru_cache(maxsize=65536)
def address_to_wire(address: str) -> bytes:
    """Turn a 12-digit address (digits, or AA wildcard bytes) into its 6 wire bytes, low byte first."""
    text = address.strip().upper()
    if len(text) < 12 and text.isdigit():
        text = text.rjust(12, "0")
    if len(text) != 12:
        raise EncodeError(f"address must have 12 digits, got {address!r}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise EncodeError(f"address {address!r} is not 12 hex/BCD digits") from None
    return raw[::-1]


def unicast_address(address: str) -> str:
    """The 12-digit address of exactly one meter, for writes; refuses wildcards, broadcasts, non-BCD.

    A write (relay control, clock, parameter, password) must reach one meter: ``AA`` wildcard digits
    (``AAAAAAAAAAAA`` reaches every meter on the bus), the broadcast ``999999999999``, hex digits and a
    wrong length are refused with an ``EncodeError`` saying why. The only broadcast the head-end sends
    is the time broadcast (``build_time_sync``).
    """
    text = address.strip().upper()
    if len(text) != 12:
        raise EncodeError(f"address {address!r} must have exactly 12 decimal digits, has {len(text)}")
    if not all(c in "0123456789A" for c in text):
        raise EncodeError(f"address {address!r} is not 12 decimal (BCD) digits")
    if "A" in text:
        raise EncodeError(f"address {address!r} has AA wildcard digits: a write must name exactly one meter")
    if text == BROADCAST_ADDRESS:
        raise EncodeError(f"address {address!r} is the broadcast address: a write must name one meter")
    return text


def address_from_wire(raw: bytes) -> str:
    """Turn 6 wire bytes (low byte first) into the 12-character address as written on the meter."""
    return raw[::-1].hex().upper()


def checksum(data: bytes) -> int:
    """Sum of the bytes modulo 256."""
    return sum(data) & 0xFF


def encode_frame(address: str, control: int, data: bytes = b"", preamble: int = 4) -> bytes:
    """Build a complete frame; ``data`` is given plain (the +0x33 is applied here)."""
    if len(data) > 255:
        raise EncodeError(f"data field of {len(data)} bytes exceeds the 255-byte length field")
    if not 0 <= control <= 0xFF:
        raise EncodeError(f"control byte 0x{control:X} out of range")
    body = b"\x68" + address_to_wire(address) + bytes((0x68, control, len(data))) + data.translate(SCRAMBLE)
    return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, END))


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """A verified frame split into its link-layer fields (data already unscrambled)."""

    address: str
    control: int
    payload: bytes


def strip_preamble(raw: bytes) -> bytes:
    """Drop leading FE wake-up bytes (only leading ones)."""
    i = 0
    n = len(raw)
    while i < n and raw[i] == PREAMBLE_BYTE:
        i += 1
    return raw[i:] if i else raw


def parse_link(raw: bytes) -> LinkFrame:
    """Verify one frame (optional FE preamble) and return its fields; raises a FramingError subclass."""
    frame = strip_preamble(bytes(raw))
    n = len(frame)
    if n == 0:
        raise TruncatedFrame("empty input: no frame")
    if frame[0] != START:
        raise FramingError(f"frame must start with 0x68 after the FE preamble, found 0x{frame[0]:02X}")
    if n < MIN_FRAME:
        raise TruncatedFrame(f"frame truncated: {n} bytes, a frame has at least {MIN_FRAME}")
    if frame[7] != START:
        raise FramingError(f"second start byte 0x68 missing at offset 7, found 0x{frame[7]:02X}")
    length = frame[9]
    total = MIN_FRAME + length
    if n < total:
        present = n - HEADER_LEN
        if present < length:
            raise TruncatedFrame(f"frame truncated: length byte says {length} data bytes, {present} present")
        raise TruncatedFrame("frame truncated: checksum and end byte 0x16 missing after the data")
    computed = sum(frame[: HEADER_LEN + length]) & 0xFF
    received = frame[HEADER_LEN + length]
    if computed != received:
        raise ChecksumError(computed, received)
    if frame[total - 1] != END:
        raise FramingError(f"end byte 0x16 missing at offset {total - 1}, found 0x{frame[total - 1]:02X}")
    if n > total:
        raise FramingError(f"{n - total} trailing bytes after the frame")
    return LinkFrame(
        address=frame[6:0:-1].hex().upper(),
        control=frame[8],
        payload=frame[HEADER_LEN : HEADER_LEN + length].translate(UNSCRAMBLE),
    )


class Deframer:
    """Stream deframer: feed arbitrary chunks, get complete verified frames (without preamble).

    Skips FE preambles and noise, frames by the length byte, verifies the second 0x68, the checksum
    and the end byte, resyncs byte by byte after noise or a corrupted frame, and keeps any remainder
    for the next call. ``expect_echo`` drops one copy of our own request (RS-485 adapter echo).
    """

    __slots__ = ("_buf", "_echo", "checksum_errors", "echoes_dropped", "frames", "noise_bytes")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._echo: bytes | None = None
        self.frames = 0
        self.noise_bytes = 0
        self.checksum_errors = 0
        self.echoes_dropped = 0

    def expect_echo(self, request: bytes) -> None:
        """Drop the next frame if it is byte-identical to ``request`` (FE preamble ignored)."""
        self._echo = strip_preamble(bytes(request))

    def reset(self) -> None:
        """Discard buffered bytes (e.g. after a timeout); counted as noise."""
        self.noise_bytes += sum(1 for b in self._buf if b != PREAMBLE_BYTE)
        self._buf.clear()
        self._echo = None

    @property
    def pending(self) -> int:
        """Number of buffered bytes not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add received bytes; return every complete, verified frame now available, in order."""
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        while True:
            start = buf.find(0x68)
            if start < 0:
                self._discard(len(buf))
                break
            if start:
                self._discard(start)
            n = len(buf)
            if n < HEADER_LEN:
                break
            if buf[7] != START:
                self._discard(1)
                continue
            total = MIN_FRAME + buf[9]
            if n < total:
                if self._later_frame_complete():
                    self._discard(1)
                    continue
                break
            body_end = total - 2
            if buf[total - 1] != END or (sum(buf[:body_end]) & 0xFF) != buf[body_end]:
                if buf[total - 1] == END:
                    self.checksum_errors += 1
                self._discard(1)
                continue
            frame = bytes(buf[:total])
            del buf[:total]
            if self._echo is not None and frame == self._echo:
                self._echo = None
                self.echoes_dropped += 1
                continue
            self.frames += 1
            out.append(frame)
        return out

    def _discard(self, count: int) -> None:
        buf = self._buf
        self.noise_bytes += count - buf.count(PREAMBLE_BYTE, 0, count)
        del buf[:count]

    def _later_frame_complete(self) -> bool:
        """True if a complete, valid frame starts after offset 0 (so the candidate at 0 is noise)."""
        buf = self._buf
        pos = buf.find(0x68, 1)
        while pos >= 0:
            if len(buf) - pos >= MIN_FRAME and buf[pos + 7] == START:
                total = MIN_FRAME + buf[pos + 9]
                if len(buf) - pos >= total and buf[pos + total - 1] == END:
                    end = pos + total - 2
                    if (sum(buf[pos:end]) & 0xFF) == buf[end]:
                        return True
            pos = buf.find(0x68, pos + 1)
        return False
