"""DL/T 645 value formats, declared as construct adapters.

Every format is a construct ``Adapter`` over fixed-size ``Bytes`` (LE on the wire, data already
unscrambled), so data items, records and blocks are composed declaratively with ``Struct`` and
``GreedyRange`` and compiled once. Scalar formats also expose fast ``decode_bytes``/``encode_value``
used directly on the hot path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from construct import Adapter, Bytes, Construct, ConstructError, GreedyBytes, GreedyRange

from protocols.dlt645.errors import EncodeError, PayloadError


class Scalar(Adapter):
    """Base of the fixed-size scalar formats: subclasses implement ``decode_bytes``/``encode_value``."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(Bytes(nbytes))
        self.nbytes = nbytes

    def decode_bytes(self, raw: bytes) -> Any:
        raise NotImplementedError

    def encode_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def _decode(self, obj: bytes, context: Any, path: str) -> Any:
        return self.decode_bytes(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        return self.encode_value(obj)


def bcd_digits(raw: bytes) -> str:
    """The BCD digits of LE bytes, most significant first; raises PayloadError on a non-decimal nibble."""
    text = raw[::-1].hex()
    if not text.isdigit():
        raise PayloadError(f"non-BCD digits {text.upper()}")
    return text


class Bcd(Scalar):
    """Unsigned or signed BCD number, ``decimals`` implied decimals (e.g. XXXXXX.XX = Bcd(4, 2)).

    Signed items carry the sign in bit 7 of the most significant byte.
    """

    def __init__(self, nbytes: int, decimals: int = 0, signed: bool = False) -> None:
        super().__init__(nbytes)
        self.decimals = decimals
        self.signed = signed
        self.scale = 10**decimals
        self.limit = 8 * 10 ** (2 * nbytes - 1) if signed else 10 ** (2 * nbytes)

    def decode_bytes(self, raw: bytes) -> int | float:
        negative = False
        if self.signed and raw[-1] & 0x80:
            negative = True
            raw = raw[:-1] + bytes((raw[-1] & 0x7F,))
        text = raw[::-1].hex()
        if not text.isdigit():
            raise PayloadError(f"non-BCD digits {text.upper()}")
        number = int(text)
        if negative and number == 0:
            negative = False
        value: int | float = number / self.scale if self.decimals else number
        return -value if negative else value

    def encode_value(self, value: Any) -> bytes:
        try:
            scaled = round(float(value) * self.scale) if self.decimals else int(value)
        except (TypeError, ValueError):
            raise EncodeError(f"{value!r} is not a number") from None
        negative = scaled < 0
        if negative and not self.signed:
            raise EncodeError(f"{value!r} is negative; the format is unsigned")
        magnitude = -scaled if negative else scaled
        if magnitude >= self.limit:
            raise EncodeError(f"{value!r} does not fit {self.nbytes} BCD bytes with {self.decimals} decimals")
        raw = bytes.fromhex(f"{magnitude:0{2 * self.nbytes}d}")[::-1]
        if negative:
            raw = raw[:-1] + bytes((raw[-1] | 0x80,))
        return raw


class Digits(Scalar):
    """A number written as digits (address, meter number, operator code): kept as a string."""

    def decode_bytes(self, raw: bytes) -> str:
        return raw[::-1].hex().upper()

    def encode_value(self, value: Any) -> bytes:
        text = str(value).strip()
        if len(text) > 2 * self.nbytes:
            raise EncodeError(f"{value!r} has more than {2 * self.nbytes} digits")
        try:
            return bytes.fromhex(text.rjust(2 * self.nbytes, "0"))[::-1]
        except ValueError:
            raise EncodeError(f"{value!r} is not a digit string") from None


class Ascii(Scalar):
    """ASCII text, transmitted last character first, NUL-padded."""

    def decode_bytes(self, raw: bytes) -> str:
        return raw[::-1].strip(b"\x00 ").decode("ascii", "replace")

    def encode_value(self, value: Any) -> bytes:
        try:
            data = str(value).encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"{value!r} is not ASCII") from None
        if len(data) > self.nbytes:
            raise EncodeError(f"{value!r} is longer than {self.nbytes} characters")
        return data.rjust(self.nbytes, b"\x00")[::-1]


class Raw(Scalar):
    """Bytes kept as they are (write-only items, opaque vendor data)."""

    def decode_bytes(self, raw: bytes) -> bytes:
        return bytes(raw)

    def encode_value(self, value: Any) -> bytes:
        data = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        if len(data) != self.nbytes:
            raise EncodeError(f"expected {self.nbytes} bytes, got {len(data)}")
        return data


class Opaque(Adapter):
    """Variable-length bytes kept as they are (records whose layout varies by vendor)."""

    def __init__(self) -> None:
        super().__init__(GreedyBytes)

    def _decode(self, obj: bytes, context: Any, path: str) -> bytes:
        return bytes(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> bytes:
        return bytes.fromhex(obj) if isinstance(obj, str) else bytes(obj)


_FIELD_ORDER = ("YY", "MM", "DD", "WW", "hh", "mm", "ss")


class Timestamp(Scalar):
    """Date/time as BCD fields, written in standard order (e.g. ``YYMMDDhhmmss``) and sent reversed.

    Decodes to ``datetime`` (date and time present), ``date`` (YYMMDD[WW]), ``time`` (hhmmss[..]) or,
    without a year (1997 ``MMDDhhmm``), a string ``MM-DD hh:mm``. An all-zero date (no month) means
    "no record" and decodes to ``None``. The weekday ``WW`` (0 = Sunday) is computed when encoding.
    """

    def __init__(self, pattern: str) -> None:
        fields = [pattern[i : i + 2] for i in range(0, len(pattern), 2)]
        if any(f not in _FIELD_ORDER for f in fields):
            raise ValueError(f"bad timestamp pattern {pattern!r}")
        super().__init__(len(fields))
        self.pattern = pattern
        self.fields = fields

    def decode_bytes(self, raw: bytes) -> Any:
        digits = bcd_digits(raw)
        if "MM" in self.fields and int(digits) == 0:
            return None
        parts = {name: int(digits[2 * i : 2 * i + 2]) for i, name in enumerate(self.fields)}
        try:
            if "YY" in parts and "hh" in parts:
                return dt.datetime(
                    2000 + parts["YY"], parts["MM"], parts["DD"], parts["hh"], parts["mm"], parts.get("ss", 0)
                )
            if "YY" in parts:
                return dt.date(2000 + parts["YY"], parts["MM"], parts["DD"])
            if "MM" in parts:
                return f"{parts['MM']:02d}-{parts['DD']:02d} {parts['hh']:02d}:{parts['mm']:02d}"
            return dt.time(parts["hh"], parts["mm"], parts.get("ss", 0))
        except (ValueError, KeyError) as exc:
            raise PayloadError(f"invalid {self.pattern} value {digits}: {exc}") from None

    def encode_value(self, value: Any) -> bytes:
        if value is None:
            return bytes(self.nbytes)
        parts = self._parts(value)
        try:
            text = "".join(f"{parts[name]:02d}" for name in self.fields)
        except KeyError as exc:
            raise EncodeError(f"{value!r} lacks the {exc.args[0]} field of {self.pattern}") from None
        return bytes.fromhex(text)[::-1]

    @staticmethod
    def _parts(value: Any) -> dict[str, int]:
        parts: dict[str, int] = {}
        if isinstance(value, str):
            try:
                month_day, clock = value.split(" ")
                month, day = month_day.split("-")
                hour, minute = clock.split(":")
            except ValueError:
                raise EncodeError(f"{value!r} is not 'MM-DD hh:mm'") from None
            return {"MM": int(month), "DD": int(day), "hh": int(hour), "mm": int(minute)}
        if isinstance(value, dt.date):
            if not 2000 <= value.year <= 2099:
                raise EncodeError(f"year {value.year} is outside 2000..2099")
            parts.update(YY=value.year - 2000, MM=value.month, DD=value.day, WW=(value.isoweekday() % 7))
        if isinstance(value, dt.datetime | dt.time):
            parts.update(hh=value.hour, mm=value.minute, ss=value.second)
        if not parts:
            raise EncodeError(f"{value!r} is not a date/time")
        return parts


class BitWord(Scalar):
    """A bit field (status words): decodes to ``{name: bool, ..., "raw": int}``."""

    def __init__(self, nbytes: int, bits: Mapping[int, str]) -> None:
        super().__init__(nbytes)
        self.bits = dict(bits)

    def decode_bytes(self, raw: bytes) -> dict[str, Any]:
        word = int.from_bytes(raw, "little")
        result: dict[str, Any] = {name: bool(word >> bit & 1) for bit, name in self.bits.items()}
        result["raw"] = word
        return result

    def encode_value(self, value: Any) -> bytes:
        if isinstance(value, int):
            word = value
        elif isinstance(value, Mapping):
            word = int(value.get("raw", 0))
            for bit, name in self.bits.items():
                if name in value:
                    word = word | (1 << bit) if value[name] else word & ~(1 << bit)
        else:
            raise EncodeError(f"{value!r} is not a status word")
        if not 0 <= word < 1 << (8 * self.nbytes):
            raise EncodeError(f"status word {word} does not fit {self.nbytes} bytes")
        return word.to_bytes(self.nbytes, "little")


BAUD_BITS = {0x01: 300, 0x02: 600, 0x04: 1200, 0x08: 2400, 0x10: 4800, 0x20: 9600, 0x40: 19200}
BITS_BY_BAUD = {baud: bit for bit, baud in BAUD_BITS.items()}


class BaudWord(Scalar):
    """The baud-rate feature word: a one-hot bitmap (0x08 = 2400) decoded to the rate in bit/s."""

    def __init__(self) -> None:
        super().__init__(1)

    def decode_bytes(self, raw: bytes) -> int:
        try:
            return BAUD_BITS[raw[0]]
        except KeyError:
            raise PayloadError(f"baud feature word 0x{raw[0]:02X} is not a single known rate bit") from None

    def encode_value(self, value: Any) -> bytes:
        try:
            return bytes((BITS_BY_BAUD[int(value)],))
        except (KeyError, TypeError, ValueError):
            raise EncodeError(f"{value!r} is not a DL/T 645 baud rate ({sorted(BITS_BY_BAUD)})") from None


def blocks_of(item: Construct) -> Construct:
    """A block: as many ``item`` as the data holds (used by FF data identifiers)."""
    return GreedyRange(item)


def plain(value: Any) -> Any:
    """Convert construct containers into plain dicts and lists (no private keys)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


__all__ = [
    "Ascii",
    "BaudWord",
    "Bcd",
    "BitWord",
    "ConstructError",
    "Digits",
    "Opaque",
    "Raw",
    "Scalar",
    "Timestamp",
    "bcd_digits",
    "blocks_of",
    "plain",
]
