"""Batching points into as few read requests as possible."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocols.modbus.points import Point

MAX_REGISTERS = 125  # Modbus limit for FC03/FC04


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request (function, address, count) covering some points."""

    function: int
    address: int
    count: int
    points: tuple[Point, ...]

    def decode(self, registers: list[int]) -> dict[str, float]:
        """Values of this block's points from the registers the read returned."""
        if len(registers) != self.count:
            raise ValueError(f"block at {self.address} wants {self.count} registers, got {len(registers)}")
        return {
            p.name: p.decode(registers[p.address - self.address : p.end - self.address]) for p in self.points
        }


def plan_reads(points: Iterable[Point], max_gap: int = 8, max_count: int = MAX_REGISTERS) -> list[ReadBlock]:
    """Group points by function into blocks; a gap of up to ``max_gap`` unused registers is read through."""
    if not 1 <= max_count <= MAX_REGISTERS:
        raise ValueError(f"max_count must be 1..{MAX_REGISTERS}")
    blocks: list[ReadBlock] = []
    ordered = sorted(points, key=lambda p: (p.function, p.address, p.count))
    current: list[Point] = []
    for point in ordered:
        if current:
            first, end = current[0], max(p.end for p in current)
            fits = (
                point.function == first.function
                and point.address - end <= max_gap
                and max(end, point.end) - first.address <= max_count
            )
            if not fits:
                blocks.append(_block(current))
                current = []
        current.append(point)
    if current:
        blocks.append(_block(current))
    return blocks


def _block(points: list[Point]) -> ReadBlock:
    start = points[0].address
    return ReadBlock(points[0].function, start, max(p.end for p in points) - start, tuple(points))
