"""1376.1 link layer: the fixed-length frame ``68 L L 68 <user data> CS 16`` and a stream deframer.

L is 16 bits LE, sent twice: D1..D0 the protocol id (``10`` = 1376.1, ``01`` = Q/GDW 130-2005),
D15..D2 the user-data length (C through the last AUX byte). CS is the byte sum of the user data.
Frames are delimited by L, never by scanning for 0x16 (same discipline as ``protocols.dlt645.link``).
Layout checked against the frame checker ``GDW376_1_CheckOutFrm2`` in gdgly/gwl
(PROTO/Mrs_fw_proto376_1.c: ``len >>= 2``, CS over ``len`` bytes from offset 6) and the Q/GDW 376.1
Kaitai description (``user_data_length: l >> 2``, ``protocal: l & 0b11``).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.gdw1376.errors import ChecksumError, EncodeError, FramingError, TruncatedFrame

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
HEADER_LEN = 6  # 68 L L 68
PROTOCOL_1376 = 2  # D1D0 = 10
PROTOCOL_130 = 1  # D1D0 = 01 (Q/GDW 130-2005)
PROTOCOLS = (PROTOCOL_1376, PROTOCOL_130)
MIN_USER_DATA = 8  # C + A(5) + AFN + SEQ
MAX_USER_DATA = 0x3FFF  # 14 bits


def checksum(data: bytes) -> int:
    """Sum of the bytes modulo 256."""
    return sum(data) & 0xFF


def encode_link(user_data: bytes, protocol: int = PROTOCOL_1376) -> bytes:
    """Wrap user data (C … AUX) into a frame: header with the doubled L, CS and end byte."""
    n = len(user_data)
    if not MIN_USER_DATA <= n <= MAX_USER_DATA:
        raise EncodeError(f"user data of {n} bytes outside {MIN_USER_DATA}..{MAX_USER_DATA}")
    if protocol not in PROTOCOLS:
        raise EncodeError(f"protocol id {protocol} is not 2 (1376.1) or 1 (Q/GDW 130)")
    length = ((n << 2) | protocol).to_bytes(2, "little")
    return b"\x68" + length + length + b"\x68" + user_data + bytes((sum(user_data) & 0xFF, END))


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """A verified frame: its protocol id and its user data (C through the last AUX byte)."""

    protocol: int
    user_data: bytes


def strip_preamble(raw: bytes) -> bytes:
    """Drop leading FE wake-up bytes (serial-line terminals send them; only leading ones)."""
    i = 0
    while i < len(raw) and raw[i] == PREAMBLE_BYTE:
        i += 1
    return raw[i:] if i else raw


def header_length(head: bytes | bytearray) -> int | None:
    """User-data length from a 6-byte header, or None if it is no 1376.1/130 header."""
    if head[0] != START or head[5] != START or head[1] != head[3] or head[2] != head[4]:
        return None
    word = head[1] | (head[2] << 8)
    if word & 0b11 not in PROTOCOLS:
        return None
    n = word >> 2
    return n if n >= MIN_USER_DATA else None


def looks_like_frame(raw: bytes) -> bool:
    """True if ``raw`` (FE preamble allowed) starts with a 1376.1 header: doubled L and protocol id.

    This is what tells a 1376.1 frame from a DL/T 645 one (``68 A0..A5 68``) for auto-detection.
    """
    frame = strip_preamble(raw)
    return len(frame) >= HEADER_LEN and header_length(frame) is not None


def parse_link(raw: bytes) -> LinkFrame:
    """Verify one frame (optional FE preamble) and return it; raises a FramingError subclass."""
    frame = strip_preamble(bytes(raw))
    n = len(frame)
    if n == 0:
        raise TruncatedFrame("empty input: no frame")
    if frame[0] != START:
        raise FramingError(f"frame must start with 0x68, found 0x{frame[0]:02X}")
    if n < HEADER_LEN:
        raise TruncatedFrame(f"frame truncated: {n} bytes, the header has {HEADER_LEN}")
    if frame[5] != START:
        raise FramingError(f"second start byte 0x68 missing at offset 5, found 0x{frame[5]:02X}")
    if frame[1:3] != frame[3:5]:
        raise FramingError(f"the two length fields differ: {frame[1:3].hex()} vs {frame[3:5].hex()}")
    word = frame[1] | (frame[2] << 8)
    protocol = word & 0b11
    if protocol not in PROTOCOLS:
        raise FramingError(f"protocol id {protocol:02b} in L is neither 10 (1376.1) nor 01 (Q/GDW 130)")
    length = word >> 2
    if length < MIN_USER_DATA:
        raise FramingError(f"user data length {length} is below the {MIN_USER_DATA} bytes of C, A, AFN, SEQ")
    total = HEADER_LEN + length + 2
    if n < total:
        raise TruncatedFrame(f"frame truncated: L says {total} bytes, {n} present")
    user_data = frame[HEADER_LEN : HEADER_LEN + length]
    computed = sum(user_data) & 0xFF
    if computed != frame[total - 2]:
        raise ChecksumError(computed, frame[total - 2])
    if frame[total - 1] != END:
        raise FramingError(f"end byte 0x16 missing at offset {total - 1}, found 0x{frame[total - 1]:02X}")
    if n > total:
        raise FramingError(f"{n - total} trailing bytes after the frame")
    return LinkFrame(protocol, user_data)


class Deframer:
    """Stream deframer: feed arbitrary chunks, get complete verified frames (without preamble).

    Skips FE preambles and noise, frames by the doubled L (both copies and the protocol id must
    agree), verifies the checksum and the end byte, resyncs byte by byte after noise or a corrupted
    frame, and keeps any remainder for the next call. The API mirrors ``protocols.dlt645.Deframer``.
    """

    __slots__ = ("_buf", "checksum_errors", "frames", "noise_bytes")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.noise_bytes = 0
        self.checksum_errors = 0

    def reset(self) -> None:
        """Discard buffered bytes (e.g. after a timeout); counted as noise."""
        self.noise_bytes += sum(1 for b in self._buf if b != PREAMBLE_BYTE)
        self._buf.clear()

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
            if len(buf) < HEADER_LEN:
                break
            length = header_length(buf)
            if length is None:
                self._discard(1)
                continue
            total = HEADER_LEN + length + 2
            if len(buf) < total:
                if self._later_frame_complete():
                    self._discard(1)
                    continue
                break
            cs_at = total - 2
            if buf[total - 1] != END or (sum(buf[HEADER_LEN:cs_at]) & 0xFF) != buf[cs_at]:
                if buf[total - 1] == END:
                    self.checksum_errors += 1
                self._discard(1)
                continue
            out.append(bytes(buf[:total]))
            del buf[:total]
            self.frames += 1
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
            if len(buf) - pos >= HEADER_LEN:
                length = header_length(buf[pos : pos + HEADER_LEN])
                if length is not None:
                    end = pos + HEADER_LEN + length + 2
                    if (
                        end <= len(buf)
                        and buf[end - 1] == END
                        and (sum(buf[pos + HEADER_LEN : end - 2]) & 0xFF) == buf[end - 2]
                    ):
                        return True
            pos = buf.find(0x68, pos + 1)
        return False
