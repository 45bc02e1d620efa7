"""How an inbound connection says who it is, and which of its bytes are keep-alives: one strategy per kind.

A listener hands every byte received before identification to its kind's :class:`Identifier`,
and every byte after it through the connection's :class:`KeepAliveFilter`; what comes out of the
filter is the clean byte stream of the bus behind the device. Two kinds are registered in
:data:`KINDS`: ``dtu`` (cellular DTUs: a registration packet, then heartbeat packets) and
``gdw1376`` (Q/GDW 1376.1 concentrators: the login frame, AFN 02 F1, names the terminal by its
A1+A2; nothing is stripped afterwards, because the concentrator link confirms the login and the
heartbeats itself, see :mod:`headend.transport.concentrator_dialin`).

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

import protocols.gdw1376 as gdw  # its codec loads on first use, not with the configuration
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


class LoginIdentifier:
    """A Q/GDW 1376.1 concentrator's login (AFN 02 F1, uplink): the identity is the terminal
    address A1+A2 as :class:`~headend.transport.concentrator.ConcentratorLink` keys it
    (``0314-25394``). Noise and FE preambles before the frame are skipped (within the byte cap);
    any other first frame is not an identification."""

    def __init__(self, _fmt: RegistrationFormat | None = None) -> None:
        pass  # a login carries its own format: the listener's registration settings do not apply

    def identify(self, buffer: bytes) -> Identification | None:
        frames = gdw.Deframer().feed(buffer)
        if not frames:
            return None
        raw = frames[0]
        try:
            frame = gdw.decode(raw)
        except gdw.GDW1376Error as exc:
            raise IdentifyError(f"undecodable first frame: {exc}") from None
        if not (
            frame.up
            and frame.afn == gdw.Afn.LINK_TEST
            and any(fn == gdw.LOGIN for _p, fn, _v in frame.items())
        ):
            raise IdentifyError(f"first frame is not a login (AFN {frame.afn:02X})")
        return Identification(frame.address.key, buffer.find(raw) + len(raw))


class PassThrough:
    """No keep-alives to strip: the concentrator link answers (and counts) the heartbeats."""

    keepalives = 0

    def __init__(self, _pattern: bytes = b"") -> None:
        pass

    def feed(self, chunk: bytes, identifying: bool) -> bytes:
        return chunk


def confirm_login(identification: bytes) -> bytes:
    """AFN 00 F1 for a concentrator's login frame (its SEQ echoed): the listener's answer while no
    link has taken the connection yet, so the concentrator does not drop it and log in again."""
    frame = gdw.decode(identification[identification.find(0x68) :])
    return gdw.confirm(frame.address, frame.seq.seq, gdw.ALL_CONFIRMED)


class LinkTestAnswerer:
    """A concentrator connection no link has taken yet (held, or bound before its channel's first
    request): its logins and heartbeats (AFN 02, uplink) are confirmed (AFN 00 F1, SEQ echoed) so it
    stays connected instead of logging in again, and its heartbeats are counted. Other frames are
    left unanswered (nothing asked for them)."""

    def __init__(self) -> None:
        self._deframer = gdw.Deframer()
        self.heartbeats = 0

    def feed(self, chunk: bytes) -> bytes:
        """The confirmations to send for the link tests completed by ``chunk``."""
        replies = []
        for raw in self._deframer.feed(chunk):
            try:
                frame = gdw.decode(raw)
            except gdw.GDW1376Error:
                continue
            if not (frame.up and frame.control.prm and frame.afn == gdw.Afn.LINK_TEST):
                continue
            if any(fn == gdw.HEARTBEAT for _pn, fn, _v in frame.items()):
                self.heartbeats += 1
            replies.append(gdw.confirm(frame.address, frame.seq.seq, gdw.ALL_CONFIRMED))
        return b"".join(replies)


class ListenerKind(NamedTuple):
    """What a kind of device brings to a listener: how it identifies itself, what its keep-alives are,
    and what (if anything) the listener answers an identification bound to a known device with when
    no channel has taken the connection yet."""

    identifier: Callable[[RegistrationFormat], Identifier]  # one per listener (stateless)
    keepalive_filter: Callable[[bytes], KeepAliveFilter]  # one per connection (the listener's pattern)
    acknowledge: Callable[[bytes], bytes] | None = None
    answerer: Callable[[], LinkTestAnswerer] | None = None  # keeps an untaken connection alive


KINDS: dict[str, ListenerKind] = {
    "dtu": ListenerKind(DtuIdentifier, HeartbeatFilter),
    "gdw1376": ListenerKind(LoginIdentifier, PassThrough, confirm_login, LinkTestAnswerer),
}
