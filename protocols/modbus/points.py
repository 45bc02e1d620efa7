"""Typed Modbus points: where a quantity lives and how registers encode its value."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal

# type -> (struct code, registers)
TYPES: dict[str, tuple[str, int]] = {
    "uint16": ("H", 1),
    "int16": ("h", 1),
    "uint32": ("I", 2),
    "int32": ("i", 2),
    "float32": ("f", 2),
}
READ_FUNCTIONS = (3, 4)


class PointError(ValueError):
    """A point definition or a value that does not fit it."""


@dataclass(frozen=True, slots=True)
class Point:
    """One quantity in a meter's register map; engineering value = raw * scale."""

    name: str  # canonical quantity name, e.g. "voltage_a_v"
    function: int  # read function code: 3 holding, 4 input
    address: int  # 0-based PDU address
    type: str = "float32"
    word_order: str = "big"  # big: high word first
    scale: float = 1.0
    unit: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise PointError(f"{self.name}: unknown type {self.type!r} ({', '.join(TYPES)})")
        if self.function not in READ_FUNCTIONS:
            raise PointError(f"{self.name}: read function must be 3 or 4, got {self.function}")
        if self.word_order not in ("big", "little"):
            raise PointError(f"{self.name}: word_order must be big or little")
        if not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise PointError(f"{self.name}: address {self.address} out of range")

    @property
    def count(self) -> int:
        """Registers the point occupies."""
        return TYPES[self.type][1]

    @property
    def end(self) -> int:
        """First address after the point."""
        return self.address + self.count

    def decode(self, registers: list[int]) -> float:
        """Engineering value from exactly ``count`` registers."""
        if len(registers) != self.count:
            raise PointError(f"{self.name}: needs {self.count} registers, got {len(registers)}")
        words = registers if self.word_order == "big" else list(reversed(registers))
        raw: float = struct.unpack(">" + TYPES[self.type][0], struct.pack(f">{self.count}H", *words))[0]
        if TYPES[self.type][0] == "f":  # a float32 holds 7 significant digits, no more
            return float(f"{float(f'{raw:.7g}') * self.scale:.7g}")
        return round(raw * self.scale, self.decimals) if self.scale != 1 else raw

    @property
    def decimals(self) -> int:
        """Decimal places an integer point resolves (scale 0.01: 2; scale 1 or 10: 0)."""
        return max(0, -Decimal(repr(self.scale)).normalize().as_tuple().exponent)  # type: ignore[operator]

    def encode(self, value: float) -> list[int]:
        """Registers holding ``value`` (rounded to the point's resolution for integer types)."""
        code = TYPES[self.type][0]
        raw: float | int = value / self.scale
        if code != "f":
            raw = round(raw)
        try:
            packed = struct.pack(">" + code, raw)
        except struct.error as exc:
            raise PointError(f"{self.name}: {value} does not fit {self.type} (scale {self.scale})") from exc
        words = list(struct.unpack(f">{self.count}H", packed))
        return words if self.word_order == "big" else list(reversed(words))
