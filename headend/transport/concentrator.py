"""A link to one Q/GDW 1376.1 concentrator: one request in flight, answers matched by PSEQ.

:class:`ConcentratorLink` owns the connection of one concentrator (named by A1+A2): it sends one
request at a time (PSEQ counting 0..15, one new PSEQ per try), collects the answer's frames (FIR …
FIN, SEQ counting up from the request's) and gives up after the concentrator's answer allowance
(``turnaround_ms`` of the channel URL, plus the forwarding time the caller adds) and the URL's
``retries``. A frame that is not the answer awaited (a late answer to an earlier PSEQ, another
terminal's address) is counted and dropped, never handed to the wrong request.

While it owns the connection the link also answers the concentrator's link tests (AFN 02 login,
heartbeat, logout: AFN 00 F1 with the frame's SEQ) and watches ACD: when an uplink frame carries an
event counter EC1 beyond the records already read, the link reads AFN 0E F1 (between requests,
never two in flight) and queues the records in :attr:`ConcentratorLink.events` for the daemon.

The link runs on a plain asyncio stream (``StreamReader``/``StreamWriter``):

* ``gdw1376+tcp://host:port?address=…``: the link connects itself (lazily, on the first request,
  again after the connection drops).
* ``gdw1376://0314-25394`` (dial-in): the link waits for :meth:`ConcentratorLink.attach`. **What a
  dial-in listener must provide**: after it has decoded the concentrator's login (AFN 02 F1) and
  found the link whose :attr:`ConcentratorLink.key` equals the login's ``frame.address.key``
  (A1+A2, never the peer IP), it calls ``link.attach(reader, writer, login=raw_login_bytes)`` and
  stops reading that stream itself (a listener holding a bare transport calls
  :func:`attach_transport` instead). The link confirms the login, reads every later byte (the
  heartbeats included) and closes the stream when it is replaced or closed. A newer login with the
  same A1+A2 is attached the same way: the old stream is closed, and a request in flight on it is
  sent again on the new one (one try is not used up). Pull style instead: a ``connector`` given to
  the link is asked for the concentrator's connection whenever a request finds none. The daemon
  and the field commands (``--listen``) do both through the shared dial-in listener:
  :mod:`headend.transport.concentrator_dialin`.

The PW for AFN 04/05/10 comes from the caller (the secrets file), never from code, and is never
logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from headend.transport.channel import ChannelError, ChannelOffline, ChannelUnavailable, FrameTap
from headend.transport.url import ChannelConfig
from protocols.gdw1376 import (
    ALL_CONFIRMED,
    ALL_DENIED,
    LOGIN,
    LOGOUT,
    Address,
    Afn,
    Deframer,
    EventRecords,
    EventRequest,
    Frame,
    GDW1376Error,
    PowerEvent,
    RawEvent,
    Unit,
    build_request,
    confirm,
    decode,
    unit,
)
from protocols.gdw1376.alarms import MeterAlarm, meter_alarms
from protocols.gdw1376.fields import PW_AFNS

log = logging.getLogger(__name__)

EVENT_RING = 256  # EC1 / the event pointers count modulo 256

# Dial-in, pull style: (concentrator key, seconds to wait) -> its identified connection and the raw
# login frame already read from it (b"" if none); raises ConcentratorOffline when there is none.
Connector = Callable[[str, float], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]]
READ_CHUNK = 4096


class ConcentratorOffline(ChannelUnavailable):
    """The concentrator has no connection (dial-in not connected, or it cannot be reached)."""


class ConcentratorGone(ConcentratorOffline, ChannelOffline):
    """A dial-in concentrator's connection closed or was lost: the device went offline, which is not a
    failure of its meters (they are not quarantined for it)."""


class ConcentratorTimeout(ChannelError):
    """No complete answer within the allowance, after every try."""

    def __init__(self, label: str, afn: int, tries: int) -> None:
        super().__init__(
            f"{label}: no answer to AFN {afn:02X} after {tries} tr{'y' if tries == 1 else 'ies'}"
        )
        self.tries = tries


class ConcentratorDenied(ChannelError):
    """The concentrator denied the request (AFN 00 F2: no such Pn, bad PW, unsupported Fn)."""


@dataclass(slots=True)
class LinkStats:
    """What a concentrator link counts (exported by the daemon's concentrator service)."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    denials: int = 0
    frames_in: int = 0
    frames_out: int = 0
    multi_frame_answers: int = 0
    late_frames: int = 0  # answers to an earlier PSEQ, arriving after their request gave up
    foreign_frames: int = 0  # another terminal's address, or downlink frames
    uploads: int = 0  # active uploads other than link tests (confirmed when CON asks for it)
    bad_frames: int = 0
    logins: int = 0
    heartbeats: int = 0
    connects: int = 0
    replaced: int = 0
    events_read: int = 0
    rtt_total_s: float = 0.0
    rtt_count: int = 0


@dataclass(frozen=True, slots=True)
class TerminalEvent:
    """An event record of the concentrator itself (AFN 0E F1), times in UTC."""

    erc: int
    occurred_at: datetime | None
    ended_at: datetime | None = None
    raw: bytes = b""
    alarm: MeterAlarm | None = None  # a meter's condition the record reports (ERC 10, 37, 38, 40)

    @property
    def kind(self) -> str:
        if self.alarm is not None:
            return self.alarm.kind
        return "terminal_power" if self.erc == 14 else f"terminal_erc{self.erc}"


@dataclass(slots=True)
class _Pending:
    """The request in flight: its PSEQ and AFN, the frames of its answer so far."""

    pseq: int
    afn: int
    future: asyncio.Future[list[Frame]]
    frames: list[Frame] = field(default_factory=list)

    def offer(self, frame: Frame) -> bool:
        """Take ``frame`` if it is the next frame of this answer; resolve the future on the last one."""
        seq = frame.seq
        if not self.frames:
            if seq.seq != self.pseq or not seq.fir or frame.afn not in (self.afn, Afn.CONFIRM):
                return False
            if frame.afn == Afn.CONFIRM and any(fn == ALL_DENIED for _pn, fn, _v in frame.items()):
                self.future.set_exception(ConcentratorDenied(f"AFN {self.afn:02X} denied"))
                return True
        elif seq.fir or frame.afn != self.afn or seq.seq != (self.frames[-1].seq.seq + 1) & 0x0F:
            return False
        self.frames.append(frame)
        if seq.fin:
            self.future.set_result(self.frames)
        return True


class _Stream:
    """One connection the link owns: its writer and the task reading it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def close(self) -> None:
        """Stop reading and abort the connection (once; nothing after ``leave``)."""
        if self.closed:
            return
        self.leave()
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    def leave(self) -> None:
        """Stop reading and leave the connection up (a dial-in listener takes its bytes again)."""
        self.closed = True
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class ConcentratorLink:
    """The link to one concentrator (see the module docstring)."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        pw: bytes | None = None,
        connect_timeout_s: float = 3.0,
        wait_s: float = 0.0,
        utc_offset: timedelta = timedelta(hours=8),
        connector: Connector | None = None,
    ) -> None:
        self.config = config
        self.address = Address.parse(config.terminal, config.msa)
        self.key = self.address.key
        self.outbound = config.scheme == "gdw1376+tcp"
        self._pw = pw
        self.connect_timeout_s = connect_timeout_s
        self.wait_s = wait_s  # dial-in: how long a request waits for the concentrator to connect
        self.connector = connector  # dial-in: asked for a connection when none is attached
        self.utc_offset = utc_offset
        self.stats = LinkStats()
        self.events: list[TerminalEvent] = []  # read from the concentrator, not yet taken by the daemon
        self.event_pointer = 0  # the next important-event record to read (AFN 0E F1 Pm)
        self.last_heard = 0.0
        self.tap: FrameTap | None = None  # sees every frame written ("tx"), received ("rx"), timed out
        self._lock = asyncio.Lock()
        self._pseq = 0
        self._pending: _Pending | None = None
        self._stream: _Stream | None = None
        self._attached = asyncio.Event()
        self._events_due: int | None = None  # EC1 announced by ACD beyond event_pointer
        self._event_task: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"ConcentratorLink({self.label}, pw={'set' if self._pw else 'none'})"

    @property
    def label(self) -> str:
        return self.config.label if self.outbound else f"gdw1376://{self.key}"

    @property
    def online(self) -> bool:
        return self._stream is not None and not self._stream.closed

    def set_pw(self, pw: bytes | None) -> None:
        """The 16-byte PW for AFN 04/05/10 (None: zeros, what terminals without ESAM accept)."""
        self._pw = pw

    # -- connection ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect now (outbound); a dial-in link has nothing to open."""
        if self.outbound:
            async with self._lock:
                await self._connection()

    async def close(self) -> None:
        """Close the connection and stop reading events; a request in flight fails."""
        await self._stop(leave_up=False)

    async def _stop(self, *, leave_up: bool) -> None:
        """Stop reading events and the connection, which is closed unless ``leave_up``."""
        self._closing = True
        if self._event_task is not None:
            self._event_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._event_task
        self._drop(self._offline("closed"), leave_up=leave_up)

    def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, login: bytes = b"") -> None:
        """Take over a connection of this concentrator (identified by its login; see the module docstring)."""
        self._closing = False
        old = self._stream
        if old is not None:
            self.stats.replaced += 1
            old.close()
            if self._pending is not None and not self._pending.future.done():
                self._pending.future.set_exception(_Moved())
        stream = self._start(reader, writer)
        if login:
            self._received(stream, login)

    def _start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Stream:
        stream = _Stream(reader, writer)
        stream.task = asyncio.create_task(self._read(stream), name=f"gdw1376-{self.key}")
        self._stream = stream
        self.stats.connects += 1
        self.last_heard = time.monotonic()
        self._attached.set()
        return stream

    def _offline(self, what: str) -> ConcentratorOffline:
        """The error of a request whose connection went: the device's going offline when it dials in."""
        return (
            ConcentratorOffline(f"{self.label}: {what}")
            if self.outbound
            else ConcentratorGone(f"{self.label}: {what}")
        )

    def _drop(self, reason: Exception, *, leave_up: bool = False) -> None:
        stream, self._stream = self._stream, None
        self._attached.clear()
        if stream is not None and leave_up:
            stream.leave()
        elif stream is not None:
            stream.close()
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(reason)

    def _check_pw_allowed(self, afn: int, units: Sequence[Unit]) -> None:
        """Raise if the PW of request ``afn`` with ``units`` must not go to the current connection (a
        terminal we connect out to: always allowed; see the dial-in link)."""

    async def _connection(self) -> _Stream:
        stream = self._stream
        if stream is not None and not stream.closed:
            return stream
        if self.outbound:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
            except (OSError, TimeoutError) as exc:
                raise ConcentratorOffline(
                    f"{self.label}: cannot connect: {exc or type(exc).__name__}"
                ) from None
            self._start(reader, writer)
        elif self.connector is not None:
            reader, writer, login = await self.connector(self.key, self.wait_s)  # raises ConcentratorOffline
            self.attach(reader, writer, login)
        else:
            try:
                async with asyncio.timeout(self.wait_s or 0.001):
                    await self._attached.wait()
            except TimeoutError:
                raise ConcentratorOffline(f"{self.label}: concentrator not connected") from None
        assert self._stream is not None
        return self._stream

    async def _read(self, stream: _Stream) -> None:
        deframer = Deframer()
        try:
            while chunk := await stream.reader.read(READ_CHUNK):
                for raw in deframer.feed(chunk):
                    self._received(stream, raw)
        except (ConnectionError, OSError):
            pass
        finally:
            self.stats.bad_frames += deframer.checksum_errors
            if self._stream is stream:
                self._drop(self._offline("connection lost"))
            else:
                stream.close()

    # -- received frames -----------------------------------------------------------------------

    def _received(self, stream: _Stream, raw: bytes) -> None:
        self.last_heard = time.monotonic()
        if self.tap is not None:
            self.tap("rx", raw)
        try:
            frame = decode(raw)
        except GDW1376Error:
            self.stats.bad_frames += 1
            return
        if not frame.up or frame.address.key != self.key:
            self.stats.foreign_frames += 1
            return
        self.stats.frames_in += 1
        if frame.control.acd and frame.ec is not None:
            self._announce_events(frame.ec[0])
        if frame.afn == Afn.LINK_TEST and frame.control.prm:
            self._link_test(stream, frame)
            return
        if frame.control.prm:  # an active upload (answers to our requests have PRM 0)
            self.stats.uploads += 1
            if frame.seq.con:
                self._write(stream, confirm(frame.address, frame.seq.seq, ALL_CONFIRMED))
            return
        pending = self._pending
        if pending is None or pending.future.done() or not pending.offer(frame):
            self.stats.late_frames += 1

    def _link_test(self, stream: _Stream, frame: Frame) -> None:
        """Confirm a login, heartbeat or logout (AFN 00 F1 echoing its SEQ)."""
        fns = {fn for _pn, fn, _v in frame.items()}
        if LOGIN in fns:
            self.stats.logins += 1
        elif LOGOUT not in fns:
            self.stats.heartbeats += 1
        self._write(stream, confirm(frame.address, frame.seq.seq, ALL_CONFIRMED))

    def _write(self, stream: _Stream, data: bytes) -> None:
        if stream.closed:
            return
        try:
            stream.writer.write(data)
        except (ConnectionError, OSError, RuntimeError):
            stream.close()
            return
        self.stats.frames_out += 1
        if self.tap is not None:
            self.tap("tx", data)

    # -- requests ------------------------------------------------------------------------------

    def _next_pseq(self) -> int:
        self._pseq = (self._pseq + 1) & 0x0F
        return self._pseq

    async def request(
        self,
        afn: int,
        units: Sequence[Unit],
        *,
        extra_s: float = 0.0,
        retries: int | None = None,
    ) -> list[Frame]:
        """Send one request and return the frames of its answer (one, or FIR … FIN).

        ``extra_s`` is added to the allowance (e.g. a forward's frame timeout and line time).
        Raises ConcentratorDenied (AFN 00 F2), ConcentratorTimeout, ConcentratorOffline.
        """
        async with self._lock:
            frames = await self._exchange(afn, units, extra_s, retries)
        self._maybe_read_events()
        return frames

    async def _exchange(
        self, afn: int, units: Sequence[Unit], extra_s: float, retries: int | None
    ) -> list[Frame]:
        tries = 1 + (self.config.retries if retries is None else retries)
        allowance = self.config.turnaround_s + extra_s
        pw = (self._pw or bytes(16)) if afn in PW_AFNS else None
        loop = asyncio.get_running_loop()
        self.stats.requests += 1
        attempt = 0
        while attempt < tries:
            stream = await self._connection()
            if pw is not None:
                self._check_pw_allowed(afn, units)
            pseq = self._next_pseq()
            pending = _Pending(pseq, afn, loop.create_future())
            self._pending = pending
            sent = loop.time()
            self._write(stream, build_request(self.address, afn, units, pseq, pw=pw))
            try:
                async with asyncio.timeout(allowance):
                    frames = await pending.future
            except _Moved:
                continue  # the concentrator logged in again on a new connection: send it there
            except TimeoutError:
                if self.tap is not None:
                    self.tap("timeout", b"")
                attempt += 1
                if attempt < tries:
                    self.stats.retries += 1
                continue
            except ConcentratorOffline:
                attempt += 1
                if attempt >= tries or not (self.outbound or self.wait_s):
                    raise
                continue  # reconnect (outbound) or wait up to wait_s for the concentrator to dial again
            except ConcentratorDenied:
                self.stats.denials += 1
                raise
            finally:
                self._pending = None
            self.stats.rtt_total_s += loop.time() - sent
            self.stats.rtt_count += 1
            if len(frames) > 1:
                self.stats.multi_frame_answers += 1
            return frames
        self.stats.timeouts += 1
        raise ConcentratorTimeout(self.label, afn, tries)

    async def values(
        self, afn: int, units: Sequence[Unit], *, extra_s: float = 0.0, retries: int | None = None
    ) -> list[tuple[int, int, object]]:
        """``(pn, fn, value)`` of every unit of the answer to one request, over all its frames."""
        frames = await self.request(afn, units, extra_s=extra_s, retries=retries)
        return [item for frame in frames if frame.afn == afn for item in frame.items()]

    # -- events (ACD) --------------------------------------------------------------------------

    def _announce_events(self, ec1: int) -> None:
        if ec1 != self.event_pointer:
            self._events_due = ec1

    def _maybe_read_events(self) -> None:
        if self._events_due is None or self._closing:
            return
        if self._event_task is None or self._event_task.done():
            self._event_task = asyncio.create_task(self._read_events(), name=f"gdw1376-events-{self.key}")

    async def _read_events(self) -> None:
        """AFN 0E F1 from the last record read up to the announced EC1 (between other requests)."""
        while self._events_due is not None:
            end, self._events_due = self._events_due, None
            try:
                items = await self.values(
                    Afn.CLASS3_DATA, [unit(0, 1, EventRequest(self.event_pointer, end))]
                )
            except ChannelError as exc:
                log.info("concentrator events not read", extra={"channel": self.label, "error": str(exc)})
                self._events_due = end
                return
            for _pn, _fn, value in items:
                if isinstance(value, EventRecords):
                    self.events += [e for r in value.records for e in self._events_of(r)]
                    self.stats.events_read += len(value.records)
                    self.event_pointer = value.end % EVENT_RING

    def _events_of(self, record: PowerEvent | RawEvent) -> list[TerminalEvent]:
        """The terminal's power record, each meter alarm of a mapped ERC, or the record kept raw."""
        if isinstance(record, PowerEvent):
            return [TerminalEvent(14, self.to_utc(record.off), self.to_utc(record.on))]
        alarms = meter_alarms(record.erc, record.data)
        if not alarms:
            return [TerminalEvent(record.erc, None, raw=record.data)]
        return [TerminalEvent(record.erc, self.to_utc(a.at), raw=record.data, alarm=a) for a in alarms]

    def take_events(self) -> list[TerminalEvent]:
        """The events read so far, handed over once."""
        events, self.events = self.events, []
        return events

    # -- time ----------------------------------------------------------------------------------

    def to_utc(self, local: datetime | None) -> datetime | None:
        """A concentrator-local time (naive) as UTC."""
        return None if local is None else (local - self.utc_offset).replace(tzinfo=UTC)

    def to_local(self, utc: datetime) -> datetime:
        """A UTC time as the concentrator's naive local time."""
        return (utc.astimezone(UTC) + self.utc_offset).replace(tzinfo=None)


def attach_transport(
    link: ConcentratorLink, transport: asyncio.Transport, login: bytes, received: bytes = b""
) -> None:
    """Hand a connection the listener has identified (``login``: the raw AFN 02 F1 frame) to ``link``.

    The transport's protocol is replaced by a stream the link reads; ``received`` are bytes the
    listener got after the login frame (they are read first).
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if received:
        reader.feed_data(received)
    link.attach(reader, asyncio.StreamWriter(transport, protocol, reader, loop), login=login)


class _Moved(Exception):
    """The request's connection was replaced by a newer login: send it again there."""
