"""1376.1 data formats (appendix A of the standard) as construct adapters: one declaration both ways.

A.1 (ss mm hh DD week|MM YY), A.11 (XXXXXX.XX kWh, 4 bytes), A.14 (XXXXXX.XXXX kWh, 5 bytes),
A.15 (mm hh DD MM YY), A.16 (ss mm hh DD, inside Tp), A.20 (DD MM YY). All BCD, least significant
byte first. A value whose bytes are all ``EE`` means "no data" and decodes to ``None``.
Checked against the Q/GDW 376.1 Kaitai description (types a11, a14, a15, a16, a20) and the A.1 month
byte (week in D7..D5) of the dl_3761 Wireshark dissector, both public code found with the search tools.

The curve and real-time formats: A.5 (±XXX.X, 2 bytes: power factor in %), A.7 (XXX.X V, 2 bytes),
A.9 (±XX.XXXX kW / kvar, 3 bytes), A.13 (XXXX.XXXX kWh, 4 bytes), A.25 (±XXX.XXX A, 3 bytes), all
with the sign in D7 of the last byte where signed; A.2 (total-group power: 3 BCD digits, sign D4 and
a power-of-ten code G3G2G1 in D7..D5 of the second byte, 10^4 … 10^-3 kW) and A.3 (total-group energy:
7 BCD digits, sign D4 and unit D6 (0 kWh, 1 MWh) of the fourth byte). Widths checked against the
flash layout of the AFN 0D curves in the concentrator firmware gdgly/NUC97X_JS (2 bytes for F73/F74,
F89..F91, F105..F108; 3 for F81..F88, F92..F95; 4 for F75/F76, F97..F104) and the field list of
AFN 0C F25 in the PLMS Java master-station units (``A09``/``A05``/``A07`` per field).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from construct import Adapter, Bytes

from protocols.gdw1376.errors import EncodeError, PayloadError

NO_DATA = 0xEE


def bcd_byte(value: int) -> int:
    """One byte holding two BCD digits of ``value`` (0..99)."""
    return ((value // 10) << 4) | (value % 10)


def byte_bcd(raw: int) -> int:
    """The number 0..99 held in one BCD byte; raises PayloadError on a non-decimal nibble."""
    high, low = raw >> 4, raw & 0x0F
    if high > 9 or low > 9:
        raise PayloadError(f"non-BCD byte 0x{raw:02X}")
    return high * 10 + low


def is_no_data(raw: bytes) -> bool:
    """True when every byte is ``EE`` (the terminal has no value)."""
    return raw.count(NO_DATA) == len(raw)


class Field(Adapter):
    """A fixed-size value: subclasses implement ``decode_bytes`` / ``encode_value``; ``EE…EE`` is None."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(Bytes(nbytes))
        self.nbytes = nbytes

    def decode_bytes(self, raw: bytes) -> Any:
        raise NotImplementedError

    def encode_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def value_of(self, raw: bytes) -> Any:
        """The value of ``raw`` (exactly ``nbytes``), None for all-EE; the hot-path entry point."""
        return None if raw.count(NO_DATA) == self.nbytes else self.decode_bytes(raw)

    def bytes_of(self, value: Any) -> bytes:
        """The bytes of ``value`` (None gives all-EE); the hot-path entry point."""
        return bytes((NO_DATA,)) * self.nbytes if value is None else self.encode_value(value)

    def _decode(self, obj: bytes, context: Any, path: str) -> Any:
        return self.value_of(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        return self.bytes_of(obj)


class Reading(Field):
    """An unsigned BCD number with implied decimals: A.11 = Reading(4, 2), A.14 = Reading(5, 4)."""

    def __init__(self, nbytes: int, decimals: int) -> None:
        super().__init__(nbytes)
        self.scale: int = 10**decimals
        self.limit = 10 ** (2 * nbytes)

    def decode_bytes(self, raw: bytes) -> float:
        text = raw[::-1].hex()
        if not text.isdigit():
            raise PayloadError(f"non-BCD reading {text.upper()}")
        return int(text) / self.scale

    def encode_value(self, value: Any) -> bytes:
        try:
            scaled = round(float(value) * self.scale)
        except (TypeError, ValueError, OverflowError):
            raise EncodeError(f"{value!r} is not a number") from None
        if not 0 <= scaled < self.limit:
            raise EncodeError(f"{value!r} does not fit {self.nbytes} BCD bytes")
        return bytes.fromhex(f"{scaled:0{2 * self.nbytes}d}")[::-1]


class SignedReading(Reading):
    """A BCD number whose last byte's D7 is the sign: A.5 = (2, 1), A.9 = (3, 4), A.25 = (3, 3)."""

    def __init__(self, nbytes: int, decimals: int) -> None:
        super().__init__(nbytes, decimals)
        self.limit = 8 * 10 ** (2 * nbytes - 1)  # the top digit has three bits

    def decode_bytes(self, raw: bytes) -> float:
        negative = raw[-1] & 0x80
        value = super().decode_bytes(raw[:-1] + bytes((raw[-1] & 0x7F,)))
        return -value if negative else value

    def encode_value(self, value: Any) -> bytes:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise EncodeError(f"{value!r} is not a number") from None
        raw = super().encode_value(abs(number))
        if number < 0 and round(abs(number) * self.scale):
            return raw[:-1] + bytes((raw[-1] | 0x80,))
        return raw


GROUP_POWER_EXPONENTS = (4, 3, 2, 1, 0, -1, -2, -3)  # A.2 G3G2G1 = 0..7


class GroupPower(Field):
    """A.2: total-group power (kW), three BCD digits times a power of ten, with a sign."""

    def __init__(self) -> None:
        super().__init__(2)

    def decode_bytes(self, raw: bytes) -> float:
        digits = byte_bcd(raw[0]) + 100 * _digit(raw[1] & 0x0F)
        value = digits * 10.0 ** GROUP_POWER_EXPONENTS[raw[1] >> 5]
        return round(-value if raw[1] & 0x10 else value, 3)

    def encode_value(self, value: Any) -> bytes:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise EncodeError(f"{value!r} is not a number") from None
        for code, exponent in sorted(enumerate(GROUP_POWER_EXPONENTS), key=lambda item: item[1]):
            digits = round(abs(number) / 10.0**exponent)
            if digits <= 999:
                sign = 0x10 if number < 0 and digits else 0
                return bytes((bcd_byte(digits % 100), (code << 5) | sign | digits // 100))
        raise EncodeError(f"{value!r} does not fit A.2 (999 x 10^4 kW)")


class GroupEnergy(Field):
    """A.3: total-group energy in kWh (MWh values are scaled), seven BCD digits with a sign."""

    def __init__(self) -> None:
        super().__init__(4)

    def decode_bytes(self, raw: bytes) -> float:
        text = bytes((raw[3] & 0x0F, *raw[2::-1])).hex()[1:]
        if not text.isdigit():
            raise PayloadError(f"non-BCD A.3 value {raw.hex().upper()}")
        value = int(text) * (1000 if raw[3] & 0x40 else 1)
        return float(-value if raw[3] & 0x10 else value)

    def encode_value(self, value: Any) -> bytes:
        try:
            number = round(float(value))
        except (TypeError, ValueError, OverflowError):
            raise EncodeError(f"{value!r} is not a number") from None
        magnitude, unit = abs(number), 0
        if magnitude > 9_999_999:
            magnitude, unit = round(magnitude / 1000), 0x40
        if magnitude > 9_999_999:
            raise EncodeError(f"{value!r} does not fit A.3")
        raw = bytes.fromhex(f"{magnitude:08d}")[::-1]
        sign = 0x10 if number < 0 and magnitude else 0
        return raw[:3] + bytes((unit | sign | raw[3],))


def _digit(nibble: int) -> int:
    if nibble > 9:
        raise PayloadError(f"non-BCD digit {nibble:X}")
    return nibble


class Moment(Field):
    """A calendar time: A.1 (with seconds and week), A.15 (to the minute) or A.20 (a date)."""

    def __init__(self, kind: str) -> None:
        super().__init__({"A.1": 6, "A.15": 5, "A.20": 3}[kind])
        self.kind = kind

    def decode_bytes(self, raw: bytes) -> dt.datetime | dt.date:
        try:
            if self.kind == "A.20":
                return dt.date(2000 + byte_bcd(raw[2]), byte_bcd(raw[1]), byte_bcd(raw[0]))
            if self.kind == "A.15":
                minute, hour, day, month, year = (byte_bcd(b) for b in raw)
                return dt.datetime(2000 + year, month, day, hour, minute)
            second, minute, hour, day = (byte_bcd(b) for b in raw[:4])
            month = byte_bcd(raw[4] & 0x1F)
            return dt.datetime(2000 + byte_bcd(raw[5]), month, day, hour, minute, second)
        except ValueError as exc:
            if isinstance(exc, PayloadError):
                raise
            raise PayloadError(f"{self.kind} time {raw.hex().upper()}: {exc}") from None

    def encode_value(self, value: Any) -> bytes:
        if not isinstance(value, dt.date):
            raise EncodeError(f"{self.kind} wants a date/datetime, got {value!r}")
        if not 2000 <= value.year <= 2099:
            raise EncodeError(f"year {value.year} outside 2000..2099")
        year, month, day = value.year - 2000, value.month, value.day
        if self.kind == "A.20":
            return bytes((bcd_byte(day), bcd_byte(month), bcd_byte(year)))
        if not isinstance(value, dt.datetime):
            raise EncodeError(f"{self.kind} wants a datetime, got {value!r}")
        if self.kind == "A.15":
            return bytes(bcd_byte(v) for v in (value.minute, value.hour, day, month, year))
        week = value.isoweekday()
        head = bytes(bcd_byte(v) for v in (value.second, value.minute, value.hour, day))
        return head + bytes(((week << 5) | bcd_byte(month), bcd_byte(year)))


class DayTime(Field):
    """A.16: ss mm hh DD (the send time inside Tp), kept as a (day, hour, minute, second) tuple."""

    def __init__(self) -> None:
        super().__init__(4)

    def decode_bytes(self, raw: bytes) -> tuple[int, int, int, int]:
        second, minute, hour, day = (byte_bcd(b) for b in raw)
        return (day, hour, minute, second)

    def encode_value(self, value: Any) -> bytes:
        try:
            day, hour, minute, second = (int(v) for v in value)
        except (TypeError, ValueError):
            raise EncodeError(f"A.16 wants (day, hour, minute, second), got {value!r}") from None
        if not (0 <= second < 60 and 0 <= minute < 60 and 0 <= hour < 24 and 0 <= day <= 31):
            raise EncodeError(f"A.16 value {value!r} out of range")
        return bytes(bcd_byte(v) for v in (second, minute, hour, day))


A1 = Moment("A.1")
A2 = GroupPower()
A3 = GroupEnergy()
A5 = SignedReading(2, 1)
A7 = Reading(2, 1)
A9 = SignedReading(3, 4)
A11 = Reading(4, 2)
A13 = Reading(4, 4)
A14 = Reading(5, 4)
A15 = Moment("A.15")
A16 = DayTime()
A25 = SignedReading(3, 3)
A20 = Moment("A.20")


class Digits(Adapter):
    """A BCD/hex digit string sent least significant byte first (meter and collector addresses)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(Bytes(nbytes))
        self.nbytes = nbytes

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        return obj[::-1].hex().upper()

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        text = str(obj).strip()
        if len(text) > 2 * self.nbytes:
            raise EncodeError(f"{obj!r} has more than {2 * self.nbytes} digits")
        try:
            return bytes.fromhex(text.rjust(2 * self.nbytes, "0"))[::-1]
        except ValueError:
            raise EncodeError(f"{obj!r} is not a digit string") from None
