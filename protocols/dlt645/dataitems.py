"""Data identifiers: DI -> name, construct format, unit (2007 and 1997 editions).

The catalogue is declarative: fixed items are listed in tables, and the regular families
(energy and demand by type, phase, tariff and settlement period; freeze and event occurrences;
load-profile classes) are described by rules. ``lookup`` resolves a DI string to a ``DataItem``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from construct import Construct, ConstructError, GreedyRange, Struct

from protocols.dlt645 import dataitems_1997
from protocols.dlt645.catalogue_2007 import FIXED_2007, STATUS_BLOCK, family_item
from protocols.dlt645.errors import EncodeError, PayloadError
from protocols.dlt645.formats import Scalar, plain


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier: its name, value format (a construct), unit and size in bytes (None = variable)."""

    di: str
    name: str
    fmt: Construct
    unit: str | None = None
    length: int | None = field(init=False)
    _parse: Any = field(init=False, repr=False, compare=False)
    _build: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fmt = self.fmt
        try:
            length: int | None = fmt.sizeof()
        except ConstructError:
            length = None
        object.__setattr__(self, "length", length)
        if isinstance(fmt, Scalar):
            object.__setattr__(self, "_parse", fmt.decode_bytes)
            object.__setattr__(self, "_build", fmt.encode_value)
        elif isinstance(fmt, GreedyRange) and isinstance(fmt.subcon, Scalar):
            object.__setattr__(self, "_parse", partial(_decode_block, fmt.subcon))
            object.__setattr__(self, "_build", _compiled(fmt).build)
        else:
            compiled = _compiled(fmt)
            object.__setattr__(self, "_parse", lambda raw: plain(compiled.parse(raw)))
            object.__setattr__(self, "_build", compiled.build)

    def decode(self, raw: bytes) -> Any:
        """Decode the data bytes (after −0x33) of this item; raises PayloadError on bad data."""
        if self.length is not None and len(raw) != self.length:
            raise PayloadError(f"{self.di} ({self.name}) takes {self.length} data bytes, got {len(raw)}")
        try:
            return self._parse(raw)
        except PayloadError:
            raise
        except (ConstructError, ValueError, KeyError, IndexError) as exc:
            raise PayloadError(f"{self.di} ({self.name}): {exc}") from None

    def encode(self, value: Any) -> bytes:
        """Encode a value of this item into its data bytes (before +0x33)."""
        try:
            data: bytes = self._build(value)
        except EncodeError:
            raise
        except (ConstructError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise EncodeError(f"{self.di} ({self.name}): cannot encode {value!r}: {exc}") from None
        if self.length is not None and len(data) != self.length:
            raise EncodeError(
                f"{self.di} ({self.name}) takes {self.length} data bytes, value gives {len(data)}"
            )
        return data


def _decode_block(item: Scalar, raw: bytes) -> list[Any]:
    """A block of fixed-size items (an FF data identifier): every item must decode, none is dropped."""
    size = item.nbytes
    if len(raw) % size:
        raise PayloadError(f"a block of {size}-byte items cannot hold {len(raw)} bytes")
    decode = item.decode_bytes
    return [decode(raw[i : i + size]) for i in range(0, len(raw), size)]


_COMPILED: dict[int, Any] = {}


def _compiled(fmt: Construct) -> Any:
    """Compile a composite format once (formats are shared between many data items)."""
    key = id(fmt)
    if key not in _COMPILED:
        _COMPILED[key] = fmt.compile() if isinstance(fmt, Struct | GreedyRange) else fmt
    return _COMPILED[key]


def normalize_di(di: str, edition: int = 2007) -> str:
    """Upper-case hex DI without separators; validates its length for the edition."""
    text = di.replace(" ", "").replace("_", "").upper()
    digits = 8 if edition == 2007 else 4
    if len(text) != digits:
        raise EncodeError(f"a {edition} data identifier has {digits} hex digits, got {di!r}")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise EncodeError(f"data identifier {di!r} is not hexadecimal") from None
    return text


@lru_cache(maxsize=4096)
def di_to_wire(di: str, edition: int = 2007) -> bytes:
    """DI bytes in wire order (DI0 first), before +0x33."""
    return bytes.fromhex(normalize_di(di, edition))[::-1]


@lru_cache(maxsize=4096)
def lookup(di: str, edition: int = 2007) -> DataItem | None:
    """The DataItem for a DI string (e.g. "00010000", "9010"), or None if the catalogue lacks it."""
    try:
        key = normalize_di(di, edition)
    except EncodeError:
        return None
    if edition == 1997:
        spec = dataitems_1997.item_spec(key)
    else:
        spec = FIXED_2007.get(key) or (STATUS_BLOCK if key == "040005FF" else None) or family_item(key)
    if spec is None:
        return None
    name, fmt, unit = spec
    return DataItem(key, name, fmt, unit)
