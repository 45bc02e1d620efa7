"""Load-profile records (DL/T 645-2007 data class 06): six classes of interval data.

Class 06 00 (all classes) records are ``A0 A0 LEN time(5) class1 AA class2 AA … class6 AA CS E5 E5``,
where LEN counts the bytes from the time through the last ``AA`` and CS is their sum with the
leading ``A0 A0 LEN``; a disabled class leaves just its ``AA`` separator. Class-specific reads
(06 01 … 06 06) return ``time(5)`` followed by that class's fields, one record after another.
Each record decodes to a dict ``{"time": datetime, <field>: value, ...}``.
"""

from __future__ import annotations

from typing import Any

from construct import Adapter, GreedyBytes, Struct

from protocols.dlt645.errors import EncodeError, PayloadError
from protocols.dlt645.formats import Bcd, Timestamp, plain

RECORD_TIME = Timestamp("YYMMDDhhmm")
SEPARATOR = 0xAA
RECORD_START = b"\xa0\xa0"
RECORD_END = b"\xe5\xe5"

CLASS_FIELDS: dict[int, list[tuple[str, Bcd]]] = {
    1: [
        ("voltage_a_v", Bcd(2, 1)),
        ("voltage_b_v", Bcd(2, 1)),
        ("voltage_c_v", Bcd(2, 1)),
        ("current_a_a", Bcd(3, 3, signed=True)),
        ("current_b_a", Bcd(3, 3, signed=True)),
        ("current_c_a", Bcd(3, 3, signed=True)),
        ("frequency_hz", Bcd(2, 2)),
    ],
    2: [
        (f"{kind}_power_{phase}_{unit}", Bcd(3, 4, signed=True))
        for kind, unit in (("active", "kw"), ("reactive", "kvar"))
        for phase in ("total", "a", "b", "c")
    ],
    3: [(f"pf_{phase}", Bcd(2, 3, signed=True)) for phase in ("total", "a", "b", "c")],
    4: [
        ("energy_import_kwh", Bcd(4, 2)),
        ("energy_export_kwh", Bcd(4, 2)),
        ("combined_reactive_1_kvarh", Bcd(4, 2, signed=True)),
        ("combined_reactive_2_kvarh", Bcd(4, 2, signed=True)),
    ],
    5: [(f"reactive_q{q}_kvarh", Bcd(4, 2)) for q in (1, 2, 3, 4)],
    6: [("active_demand_kw", Bcd(3, 4, signed=True)), ("reactive_demand_kvar", Bcd(3, 4, signed=True))],
}

CLASS_STRUCTS = {
    cls: Struct(*(name / fmt for name, fmt in fields)).compile() for cls, fields in CLASS_FIELDS.items()
}
CLASS_SIZES = {cls: sum(fmt.nbytes for _, fmt in fields) for cls, fields in CLASS_FIELDS.items()}
CLASS_KEYS = {cls: [name for name, _ in fields] for cls, fields in CLASS_FIELDS.items()}


def _decode_class(cls: int, raw: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = plain(CLASS_STRUCTS[cls].parse(raw))
    return decoded


def _encode_class(cls: int, record: dict[str, Any]) -> bytes:
    data: bytes = CLASS_STRUCTS[cls].build({k: record[k] for k in CLASS_KEYS[cls]})
    return data


def decode_all_classes(raw: bytes) -> list[dict[str, Any]]:
    """Decode a run of 06 00 (all classes) records."""
    records = []
    pos = 0
    while pos < len(raw):
        if raw[pos : pos + 2] != RECORD_START or pos + 3 > len(raw):
            raise PayloadError(f"load-profile record must start with A0 A0 at offset {pos}")
        length = raw[pos + 2]
        body = raw[pos + 3 : pos + 3 + length]
        tail = raw[pos + 3 + length : pos + 6 + length]
        if len(body) != length or len(tail) != 3:
            raise PayloadError("load-profile record truncated")
        if (sum(raw[pos : pos + 3 + length]) & 0xFF) != tail[0]:
            raise PayloadError("load-profile record checksum mismatch")
        if tail[1:] != RECORD_END:
            raise PayloadError("load-profile record must end with E5 E5")
        records.append(_decode_record_body(body))
        pos += 6 + length
    return records


def _decode_record_body(body: bytes) -> dict[str, Any]:
    record: dict[str, Any] = {"time": RECORD_TIME.decode_bytes(body[:5])}
    pos = 5
    for cls in range(1, 7):
        if pos < len(body) and body[pos] == SEPARATOR:
            pos += 1
            continue
        size = CLASS_SIZES[cls]
        if pos + size >= len(body) or body[pos + size] != SEPARATOR:
            raise PayloadError(f"load-profile class {cls} data is not followed by the AA separator")
        record.update(_decode_class(cls, body[pos : pos + size]))
        pos += size + 1
    if pos != len(body):
        raise PayloadError("load-profile record has bytes after the sixth class")
    return record


def encode_all_classes(records: list[dict[str, Any]]) -> bytes:
    """Encode 06 00 records; a class is included when all of its fields are in the record."""
    out = bytearray()
    for record in records:
        body = bytearray(RECORD_TIME.encode_value(record["time"]))
        for cls in range(1, 7):
            if all(key in record for key in CLASS_KEYS[cls]):
                body += _encode_class(cls, record)
            body.append(SEPARATOR)
        if len(body) > 255:
            raise EncodeError("load-profile record longer than 255 bytes")
        head = RECORD_START + bytes((len(body),))
        out += head + body + bytes((sum(head + body) & 0xFF,)) + RECORD_END
    return bytes(out)


def decode_class_records(cls: int, raw: bytes) -> list[dict[str, Any]]:
    """Decode class-specific (06 0k) records: time(5) + class fields, repeated."""
    size = 5 + CLASS_SIZES[cls]
    if len(raw) % size:
        raise PayloadError(f"load-profile class {cls} data of {len(raw)} bytes is not a multiple of {size}")
    return [
        {"time": RECORD_TIME.decode_bytes(raw[i : i + 5]), **_decode_class(cls, raw[i + 5 : i + size])}
        for i in range(0, len(raw), size)
    ]


def encode_class_records(cls: int, records: list[dict[str, Any]]) -> bytes:
    """Encode class-specific (06 0k) records."""
    try:
        return b"".join(RECORD_TIME.encode_value(r["time"]) + _encode_class(cls, r) for r in records)
    except KeyError as exc:
        raise EncodeError(f"load-profile class {cls} record lacks {exc.args[0]}") from None


class ProfileRecords(Adapter):
    """Construct adapter for a load-profile data class (0 = all classes, 1..6 = one class)."""

    def __init__(self, cls: int) -> None:
        super().__init__(GreedyBytes)
        self.cls = cls

    def _decode(self, obj: bytes, context: Any, path: str) -> list[dict[str, Any]]:
        return decode_all_classes(obj) if self.cls == 0 else decode_class_records(self.cls, obj)

    def _encode(self, obj: list[dict[str, Any]], context: Any, path: str) -> bytes:
        return encode_all_classes(obj) if self.cls == 0 else encode_class_records(self.cls, obj)
