"""The decoded view of one DL/T 645 frame."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Frame:
    """A decoded frame: link fields, function, data identifier and its decoded value.

    ``payload`` is the data field after −0x33. ``value`` is a number, string, date/time, dict
    (status words, records), list (blocks, load profile) or raw bytes for unknown DIs. ``fields``
    holds function-specific parameters (password level, operator, expiry, load-profile request, ...).
    """

    edition: int
    address: str
    control: int
    payload: bytes
    di: str | None = None
    name: str | None = None
    value: Any = None
    unit: str | None = None
    error_flags: list[str] | None = None
    seq: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def function(self) -> int:
        """The function code (control bits D4..D0)."""
        return self.control & 0x1F

    @property
    def is_response(self) -> bool:
        """True for meter-to-master frames (D7 set)."""
        return bool(self.control & 0x80)

    @property
    def is_abnormal(self) -> bool:
        """True for abnormal (error) replies (D6 set on a response)."""
        return bool(self.control & 0x80) and bool(self.control & 0x40)

    @property
    def has_followup(self) -> bool:
        """True when more frames follow (D5 set on a response)."""
        return bool(self.control & 0x80) and bool(self.control & 0x20)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the stable shape printed by ``headend decode --json``)."""
        return {
            "edition": str(self.edition),
            "address": self.address,
            "control": self.control,
            "function": self.function,
            "direction": "response" if self.is_response else "request",
            "abnormal": self.is_abnormal,
            "followup": self.has_followup,
            "di": self.di,
            "name": self.name,
            "value": jsonable(self.value),
            "unit": self.unit,
            "error": self.error_flags,
            "seq": self.seq,
            "fields": jsonable(self.fields),
            "payload": self.payload.hex().upper(),
        }


def jsonable(value: Any) -> Any:
    """Convert decoded values into JSON types (ISO dates, hex bytes)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex().upper()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value
