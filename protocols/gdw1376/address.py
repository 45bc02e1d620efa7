"""The 1376.1 address field A: region code A1 (BCD), terminal address A2 (BIN), A3 (MSA and group flag).

A concentrator is named by A1+A2, written ``0314-25394`` (region, terminal in decimal) or as 8 hex
digits ``03146332`` (region, terminal in hex); both are parsed, the first is printed.
Layout checked against the Q/GDW 376.1 Kaitai description (``a1: bcd``, ``a2: u2``, ``a3``: D0 group,
D7..D1 MSA) and the dl_3761 Wireshark dissector (public code found with the search tools).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.gdw1376.errors import EncodeError, PayloadError

BROADCAST_REGION = "FFFF"  # seen with terminal FFFF on broadcast frames
_DASHED = re.compile(r"^(\d{4})-(\d{1,5})$")
_HEX = re.compile(r"^(\d{4})([0-9A-Fa-f]{4})$")


@dataclass(frozen=True, slots=True)
class Address:
    """A terminal address: region (4 BCD digits), terminal number 0..65535, MSA 0..127, group flag."""

    region: str
    terminal: int
    msa: int = 0
    group: bool = False

    def __post_init__(self) -> None:
        if len(self.region) != 4 or not (self.region.isdigit() or self.region == BROADCAST_REGION):
            raise EncodeError(f"region {self.region!r} must be 4 decimal digits (or FFFF)")
        if not 0 <= self.terminal <= 0xFFFF:
            raise EncodeError(f"terminal address {self.terminal} out of range 0..65535")
        if not 0 <= self.msa <= 127:
            raise EncodeError(f"master station address {self.msa} out of range 0..127")

    @classmethod
    def parse(cls, text: str, msa: int = 0) -> Address:
        """Parse ``0314-25394`` (decimal terminal) or ``03146332`` (hex terminal)."""
        cleaned = text.strip()
        match = _DASHED.match(cleaned)
        if match:
            terminal = int(match.group(2))
        else:
            match = _HEX.match(cleaned)
            if not match:
                raise EncodeError(
                    f"concentrator address {text!r}: want REGION-TERMINAL (0314-25394) or 8 hex digits"
                )
            terminal = int(match.group(2), 16)
        if terminal > 0xFFFF:
            raise EncodeError(f"terminal address {terminal} out of range 0..65535")
        return cls(match.group(1), terminal, msa)

    @property
    def key(self) -> str:
        """The A1+A2 name of the concentrator (``0314-25394``), what a head-end binds a channel by."""
        return f"{self.region}-{self.terminal}"

    def __str__(self) -> str:
        return self.key

    @property
    def hex_name(self) -> str:
        """The 8-hex-digit form (``03146332``)."""
        return f"{self.region}{self.terminal:04X}"

    def with_msa(self, msa: int) -> Address:
        """The same terminal addressed by (or answering) another master station."""
        return Address(self.region, self.terminal, msa, self.group)

    def to_wire(self) -> bytes:
        """The 5 address bytes: A1 (BCD LE), A2 (LE), A3."""
        region = bytes.fromhex(self.region)[::-1]
        return region + self.terminal.to_bytes(2, "little") + bytes(((self.msa << 1) | int(self.group),))

    @classmethod
    def from_wire(cls, raw: bytes) -> Address:
        """Decode 5 address bytes; raises PayloadError on a non-BCD region code."""
        region = raw[1::-1].hex().upper()
        if not (region.isdigit() or region == BROADCAST_REGION):
            raise PayloadError(f"region code {region.upper()} is not BCD")
        return cls(region, int.from_bytes(raw[2:4], "little"), raw[4] >> 1, bool(raw[4] & 1))
