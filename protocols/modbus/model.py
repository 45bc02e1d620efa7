"""A Modbus meter model: register map (canonical quantity -> point) and relay strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.modbus.plan import ReadBlock, plan_reads
from protocols.modbus.points import Point, PointError
from protocols.models import load_model_data

WRITE_FUNCTIONS = (5, 6, 16)


@dataclass(frozen=True, slots=True)
class RelayStrategy:
    """How to switch the relay: write ``on``/``off`` with ``write_function`` at ``address``; read back."""

    write_function: int  # 5 coil, 6 single register, 16 multiple registers
    address: int
    on: int  # value meaning "closed / supply on"
    off: int  # value meaning "open / supply off"
    readback_function: int = 3
    readback_address: int | None = None

    def value_for(self, closed: bool) -> int:
        return self.on if closed else self.off

    def is_closed(self, value: int) -> bool | None:
        """True/False for a known read-back value, None otherwise."""
        return True if value == self.on else False if value == self.off else None

    @property
    def readback(self) -> int:
        return self.address if self.readback_address is None else self.readback_address


@dataclass(frozen=True, slots=True)
class ModbusModel:
    """A loaded ``protocols/models/<name>.json`` with ``"protocol": "modbus"``."""

    name: str
    phases: int
    points: dict[str, Point]
    relay: RelayStrategy | None = None
    unit_id: int = 1
    baud: int = 9600
    frame_format: str = "8N1"

    def reads(
        self, names: list[str] | None = None, max_gap: int = 8, max_count: int = 125
    ) -> list[ReadBlock]:
        """Read blocks for ``names`` (all points when None)."""
        wanted = self.points if names is None else {n: self.point(n) for n in names}
        return plan_reads(wanted.values(), max_gap, max_count)

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise PointError(f"model {self.name} has no point {name!r}") from None


def model_from_data(data: dict[str, Any]) -> ModbusModel:
    """Build a model from parsed JSON (precise errors for bad files)."""
    if data.get("protocol") != "modbus":
        raise PointError(f"model {data.get('model')!r} is not a Modbus model")
    points = {}
    for name, spec in data["points"].items():
        fields = {
            k: spec[k] for k in ("function", "address", "type", "word_order", "scale", "unit") if k in spec
        }
        points[name] = Point(name=name, **fields)
    relay = None
    if data.get("relay"):
        r = data["relay"]
        if r["write_function"] not in WRITE_FUNCTIONS:
            raise PointError(f"relay write_function must be one of {WRITE_FUNCTIONS}")
        relay = RelayStrategy(
            r["write_function"],
            r["address"],
            r["on"],
            r["off"],
            r.get("readback_function", 3),
            r.get("readback_address"),
        )
    defaults = data.get("defaults", {})
    return ModbusModel(
        name=data["model"],
        phases=data.get("phases", 1),
        points=points,
        relay=relay,
        unit_id=defaults.get("unit_id", 1),
        baud=defaults.get("baud", 9600),
        frame_format=defaults.get("frame_format", "8N1"),
    )


def load_modbus_model(name: str) -> ModbusModel:
    """Load a bundled model by name (e.g. ``eastron_sdm630``) or a JSON path."""
    return model_from_data(load_model_data(name))
