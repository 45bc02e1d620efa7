"""The unit of storage: one value of one quantity of one meter for one interval."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from headend.vocabulary import READING_QUALITIES, ReadingQuality

QUALITIES = READING_QUALITIES
_QUALITY_SET = frozenset(QUALITIES)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_INT4_MAX = 2**31 - 1


class InvalidReading(ValueError):
    """A reading that can never be stored; the message names the field and the reason."""


@dataclass(slots=True)
class Reading:
    """A reading as the engine hands it to the writer.

    ``ts`` is the timezone-aware interval time (stored in UTC); ``value`` is ``None`` exactly when
    ``quality`` is ``missing`` (a known gap); ``quantity`` and ``source`` are canonical names.
    """

    meter_id: int
    quantity: str
    ts: datetime
    value: float | None
    quality: ReadingQuality = "actual"  # checked again by validate(): callers may pass anything
    source: str = "poll"


_known_names: set[str] = set()  # names already found valid: skips the regex on the hot path


def _is_name(name: object) -> bool:
    if type(name) is not str:
        return False
    if name in _known_names:
        return True
    if not _NAME_RE.match(name):
        return False
    if len(_known_names) < 10_000:
        _known_names.add(name)
    return True


def validate(reading: Reading) -> None:
    """Raise :class:`InvalidReading` unless the reading can be stored as it is."""
    meter_id = reading.meter_id
    if type(meter_id) is not int or not 0 < meter_id <= _INT4_MAX:
        raise InvalidReading(f"meter_id must be a positive 32-bit integer, got {meter_id!r}")
    quantity = reading.quantity
    if not _is_name(quantity):
        raise InvalidReading(f"meter {meter_id}: quantity must be a lower_snake_case name, got {quantity!r}")
    ts = reading.ts
    if not isinstance(ts, datetime) or (
        ts.tzinfo is not UTC and (ts.tzinfo is None or ts.utcoffset() is None)
    ):
        raise InvalidReading(f"meter {meter_id} {quantity}: ts must be a timezone-aware datetime, got {ts!r}")
    quality = reading.quality
    value = reading.value
    if quality == "actual" and type(value) is float and math.isfinite(value):
        pass  # the common case
    elif quality not in _QUALITY_SET:
        raise InvalidReading(
            f"meter {meter_id} {quantity} {ts.isoformat()}: quality must be one of "
            f"{', '.join(QUALITIES)}, got {quality!r}"
        )
    elif value is None:
        if quality != "missing":
            raise InvalidReading(
                f"meter {meter_id} {quantity} {ts.isoformat()}: value is None but "
                f"quality is {quality!r} (only 'missing' has no value)"
            )
    elif quality == "missing":
        raise InvalidReading(
            f"meter {meter_id} {quantity} {ts.isoformat()}: quality 'missing' "
            f"must not carry a value, got {value!r}"
        )
    elif type(value) not in (float, int) or not math.isfinite(value):
        raise InvalidReading(
            f"meter {meter_id} {quantity} {ts.isoformat()}: value must be a finite number, got {value!r}"
        )
    if not _is_name(reading.source):
        raise InvalidReading(
            f"meter {meter_id}: source must be a lower_snake_case name, got {reading.source!r}"
        )
