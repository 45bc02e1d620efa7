"""How an inbound connection says who it is, and which of its bytes are keep-alives: one strategy per kind.

A listener hands every byte received before identification to its kind's :class:`Identifier`,
and every byte after it through the connection's :class:`KeepAliveFilter`; what comes out of the
filter is the clean byte stream of the bus behind the device. ``dtu`` (cellular DTUs: a
registration packet, then heartbeat packets) is built in; a Q/GDW 1376.1 concentrator (login
frame, AFN 02 heartbeats) is a second :class:`ListenerKind` registered in :data:`KINDS`.

Heartbeat rule (DTUs send each heartbeat as a TCP packet of its own; a reply is one or more
packets, and a heartbeat packet can come between a request and its reply or between two packets of
the reply):

* before identification, every heartbeat at the start of a received chunk is removed (nothing but
  registration and heartbeats flows then);
* after it, a received chunk that consists of whole heartbeats is removed, wherever it arrives;
* anything else passes unchanged: a heartbeat pattern inside or at the start of a chunk that
  carries other bytes too is meter data as far as the listener knows. (If it really was a
  heartbeat coalesced with a reply by TCP, it stands before the reply's frame, and the protocol's
  deframer skips it as noise: DL/T 645 frames by length after the 0x68 sync, the Modbus RTU
  deframer looks for the unit and function with a valid CRC.)

So no byte of meter data is ever removed, unless a whole packet of meter data equals the
heartbeat exactly, which costs that reply its checksum and one retry, never a wrong value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from headend.transport.url import IDENTITY_RE

Encoding = Literal["ascii", "hex"]


class IdentifyError(ValueError):
    """Bytes that cannot be an identification (malformed, oversized): the connection is closed."""


class Identification(NamedTuple):
    """Who the device is, and how many bytes of the buffer the identification used."""

    identity: str
    consumed: int


class Identifier(Protocol):
    """Recognises a kind's identification at the start of a connection's byte stream."""

    def identify(self, buffer: bytes) -> Identification | None:
        """The identification at the start of ``buffer``, None if more bytes are needed.

        Raises IdentifyError if ``buffer`` cannot become one. Called with everything received so
        far, keep-alives removed; the first call sees the device's first packet.
        """
        ...


class KeepAliveFilter(Protocol):
    """Removes keep-alive packets from the received byte stream (see the module docstring)."""

    keepalives: int

    def feed(self, chunk: bytes, identifying: bool) -> bytes: ...


def parse_pattern(text: str) -> bytes:
    """Bytes from a config pattern: ``hex:FEFE`` or plain ASCII text."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise ValueError(f"bad hex in {text!r}") from None
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} is not ASCII; write hex:... for binary patterns") from None


@dataclass(frozen=True, slots=True)
class RegistrationFormat:
    """How a DTU's registration packet looks.

    ``length`` (> 0): the id is that many bytes; else ``delimiter`` (non-empty) ends it; else the
    first packet is the whole id (the factory default of common DTUs). ``prefix`` precedes the id;
    bytes before the prefix are skipped (noise) as long as the listener's byte cap allows.
    ``encoding``: ``ascii`` (the id as text) or ``hex`` (binary id bytes, shown as upper-case hex).
    """

    encoding: Encoding = "ascii"
    length: int = 0
    delimiter: bytes = b""
    prefix: bytes = b""
    max_length: int = 64


class DtuIdentifier:
    """A DTU registration packet (see :class:`RegistrationFormat`)."""

    def __init__(self, fmt: RegistrationFormat) -> None:
        self.fmt = fmt

    def identify(self, buffer: bytes) -> Identification | None:
        fmt = self.fmt
        start = 0
        if fmt.prefix:
            found = buffer.find(fmt.prefix)
            if found < 0:
                return None
            start = found + len(fmt.prefix)
        if fmt.length:
            if len(buffer) - start < fmt.length:
                return None
            end = consumed = start + fmt.length
        elif fmt.delimiter:
            end = buffer.find(fmt.delimiter, start)
            if end < 0:
                if len(buffer) - start > fmt.max_length:
                    raise IdentifyError(f"registration longer than {fmt.max_length} bytes")
                return None
            consumed = end + len(fmt.delimiter)
        else:
            end = consumed = len(buffer)
        raw = buffer[start:end]
        if fmt.encoding == "ascii":
            raw = raw.rstrip(b"\r\n")
        if not raw:
            raise IdentifyError("empty registration")
        if len(raw) > fmt.max_length:
            raise IdentifyError(f"registration longer than {fmt.max_length} bytes")
        identity = raw.hex().upper() if fmt.encoding == "hex" else raw.decode("ascii", "replace")
        if not IDENTITY_RE.match(identity):
            raise IdentifyError(f"malformed registration {raw[:32]!r}")
        return Identification(identity, consumed)


class HeartbeatFilter:
    """Strips a DTU's heartbeat packets (the rule is in the module docstring)."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.keepalives = 0

    def feed(self, chunk: bytes, identifying: bool) -> bytes:
        pattern = self.pattern
        if not pattern or not chunk.startswith(pattern):
            return chunk
        size = len(pattern)
        if identifying:
            offset = 0
            while chunk.startswith(pattern, offset):
                offset += size
            self.keepalives += offset // size
            return chunk[offset:]
        count, rest = divmod(len(chunk), size)
        if rest or chunk != pattern * count:
            return chunk
        self.keepalives += count
        return b""


class ListenerKind(NamedTuple):
    """What a kind of device brings to a listener: how it identifies itself, what its keep-alives are."""

    identifier: Callable[[RegistrationFormat], Identifier]  # one per listener (stateless)
    keepalive_filter: Callable[[bytes], KeepAliveFilter]  # one per connection (the listener's pattern)


KINDS: dict[str, ListenerKind] = {"dtu": ListenerKind(DtuIdentifier, HeartbeatFilter)}
