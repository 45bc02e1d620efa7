"""A channel owns one physical bus (a serial port or a TCP serial server) and runs one exchange at a time.

An exchange: wait out the inter-frame gap, drop stale input, send the request, and collect frames
with the caller's deframer until one is accepted or the timeout (turnaround + line time of request
and expected reply) expires; then retry. The channel reconnects a dropped TCP link with backoff and
counts bytes, frames, timeouts, checksum errors, noise and round-trip times.

Received bytes go straight from the event loop's protocol callback into the deframer of the
exchange waiting for them (no reader task, no queue): one wake-up of the caller per reply. Gap waits
end on a shared grid of ``TIMER_SLACK_S`` (channels due in the same slot wake the loop once; the gap
is a minimum, so waiting up to one slot longer is safe), and the reply timeout is one timer per
channel, re-armed lazily, instead of a new timer per exchange.
"""

from __future__ import annotations

import asyncio
import math
import termios
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from headend.transport.serial_line import open_parity
from headend.transport.url import ChannelConfig

MAX_BACKOFF_S = 30.0
TIMER_SLACK_S = 0.005


FrameTap = Callable[[str, bytes], None]
"""Told of each frame: ``("tx", request)``, ``("rx", reply)``, ``("timeout", b"")`` (field ``--trace``)."""


class ChannelError(Exception):
    """Base of transport errors."""


class ChannelUnavailable(ChannelError):
    """The port cannot be opened or the serial server cannot be reached."""


class ChannelOffline(ChannelUnavailable):
    """A dial-in channel whose device has no live connection (not a failure of its meters)."""


class ExchangeTimeout(ChannelError):
    """No acceptable reply within the timeout, after every try."""

    def __init__(self, tries: int, noise: bool) -> None:
        detail = " (only garbage or damaged frames on the line)" if noise else ""
        super().__init__(f"timeout after {tries} tr{'y' if tries == 1 else 'ies'}{detail}")
        self.tries = tries
        self.noise = noise


class ReplyLost(ExchangeTimeout):
    """A request sent at most once (``once``) lost its reply: the connection was closed or replaced
    by a redial after the request went out. Whether it arrived is for a read-back to tell."""

    def __init__(self, why: str) -> None:
        super().__init__(1, noise=False)
        self.args = (f"reply lost: {why} after the request went out (not sent again)",)


class Framer(Protocol):
    """What a channel needs from a protocol's stream deframer."""

    checksum_errors: int
    noise_bytes: int

    def feed(self, chunk: bytes) -> list[bytes]: ...

    def expect_echo(self, request: bytes) -> None: ...

    def reset(self) -> None: ...


@dataclass(slots=True)
class ChannelStats:
    """Line statistics of one channel."""

    bytes_out: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    frames_in: int = 0
    timeouts: int = 0
    retries: int = 0
    checksum_errors: int = 0
    noise_bytes: int = 0
    unexpected_frames: int = 0
    reconnects: int = 0
    rtt_count: int = 0
    rtt_total_s: float = 0.0
    rtt_max_s: float = 0.0
    busy_s: float = 0.0

    @property
    def rtt_avg_s(self) -> float:
        return self.rtt_total_s / self.rtt_count if self.rtt_count else 0.0


class _Link(asyncio.Protocol):
    """The receiving end of one connection: feeds the waiting exchange's deframer, else counts stale bytes."""

    def __init__(self, stats: ChannelStats, label: str) -> None:
        self.stats = stats
        self.label = label
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.stale = 0  # bytes received while no exchange was listening (late replies, noise)
        self.waiter: asyncio.Future[bytes | None] | None = None
        self.framer: Framer | None = None
        self.accept: Callable[[bytes], bool] | None = None
        self.paused = False
        self._drained: asyncio.Future[None] | None = None

    def listen(
        self, waiter: asyncio.Future[bytes | None], framer: Framer, accept: Callable[[bytes], bool]
    ) -> None:
        self.waiter, self.framer, self.accept = waiter, framer, accept

    def unlisten(self) -> None:
        self.waiter = self.framer = self.accept = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.stale += len(data)
            return
        stats = self.stats
        stats.bytes_in += len(data)
        try:
            for frame in self.framer.feed(data):  # type: ignore[union-attr]
                stats.frames_in += 1
                if self.accept(frame):  # type: ignore[misc]
                    waiter.set_result(frame)
                    return
                stats.unexpected_frames += 1
        except Exception as exc:  # a codec bug fails this exchange, never the connection
            waiter.set_exception(exc)

    def eof_received(self) -> bool:
        return False  # close our side too: the next exchange reconnects

    def moved(self) -> None:
        """The connection is being replaced by a newer one (dial-in): the exchange in flight is sent
        again on the channel's next connection instead of failing."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(_REOPEN)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(
                ChannelUnavailable(f"{self.label}: connection closed by the serial server")
            )
        self._wake_writer()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        while self.paused and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.closed:
            raise ConnectionResetError("connection lost")


_REOPEN: Any = object()  # a waiter's result: send again on a new link (closed during the gap, or moved)


class _Slots:
    """Callbacks due at the same grid time share one loop timer (one heap entry per slot, not per bus)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[float, list[tuple[Callable[..., None], tuple[Any, ...]]]] = {}

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        batch = self.due.get(when)
        if batch is None:
            batch = self.due[when] = []
            self.loop.call_at(when, self._run, when)
        batch.append((callback, args))

    def _run(self, when: float) -> None:
        for callback, args in self.due.pop(when):
            callback(*args)


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


def _slots_of(loop: asyncio.AbstractEventLoop) -> _Slots:
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = _Slots(loop)
    return slots


def _on_grid(when: float) -> float:
    """The first slot of the shared timer grid at or after ``when``."""
    return math.ceil(when / TIMER_SLACK_S) * TIMER_SLACK_S


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Channel:
    """A raw byte channel over serial or TCP (see the module docstring)."""

    def __init__(self, config: ChannelConfig, connect_timeout_s: float = 3.0) -> None:
        self.config = config
        self.stats = ChannelStats()
        self.connect_timeout_s = connect_timeout_s
        self._lock = asyncio.Lock()
        self._link: _Link | None = None
        self._last_activity = 0.0
        self._sent_at = 0.0
        self._counted = (0, 0)  # the framer's error and noise counts already added to the stats
        self._waiter: asyncio.Future[Any] | None = None  # the attempt listening for its reply
        self._deadline = 0.0  # when that attempt gives up
        self._expiry: asyncio.TimerHandle | None = None  # armed at or before the deadline
        self._failures = 0
        self._next_attempt = 0.0
        self._written = False  # whether the current attempt's request went out
        self.tap: FrameTap | None = None  # sees every frame sent ("tx") and every reply taken ("rx")

    @property
    def label(self) -> str:
        return self.config.label

    async def open(self) -> None:
        """Open the port / connect (also done lazily by ``exchange``)."""
        async with self._lock:
            await self._ensure_open()

    async def close(self) -> None:
        """Close the port or connection."""
        async with self._lock:
            self._drop()
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self._discard_stale(link)
            if link.transport is not None:
                link.transport.close()

    async def _ensure_open(self) -> _Link:
        link = self._link
        if link is not None and not link.closed:
            return link
        if link is not None:
            self._drop()
        now = time.monotonic()
        if now < self._next_attempt:
            raise ChannelUnavailable(
                f"{self.label}: reconnect backoff, next try in {self._next_attempt - now:.1f} s"
            )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                link = await self._connect()
        except (OSError, TimeoutError, termios.error) as exc:
            self._failures += 1
            self._next_attempt = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
            if isinstance(exc, termios.error):  # the port refused the line settings (e.g. parity)
                c = self.config
                reason = f"the port refuses {c.baud} baud {c.bytesize}{c.parity}{c.stopbits} ({exc.args[-1]})"
                raise ChannelUnavailable(f"{self.label}: {reason}") from None
            reason = "port busy or missing" if self.config.scheme == "serial" else "cannot connect"
            raise ChannelUnavailable(f"{self.label}: {reason}: {exc or type(exc).__name__}") from None
        self._link = link
        if self._failures:
            self.stats.reconnects += 1
        self._failures = 0
        return link

    async def _connect(self) -> _Link:
        config = self.config
        loop = asyncio.get_running_loop()
        link = _Link(self.stats, self.label)
        if config.scheme == "serial":
            import serial_asyncio_fast

            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: link,
                config.path,
                baudrate=config.baud,
                bytesize=config.bytesize,
                parity=open_parity(config.path, config.parity),  # pyserial uses "N", "E", "O" too
                stopbits=config.stopbits,
                exclusive=True,
            )
            # the serial transport calls connection_made at the loop's next turn: the link has its
            # transport when this returns, not one turn later
            link.transport = link.transport or transport
        else:
            await loop.create_connection(lambda: link, config.host, config.port)
        return link

    def timeout_for(self, request_size: int, reply_size: int, turnaround_s: float | None = None) -> float:
        """Turnaround plus the line time of request and reply, with a 20 % margin."""
        line = (request_size + reply_size) * self.config.char_time
        return (turnaround_s if turnaround_s is not None else self.config.turnaround_s) + 1.2 * line + 0.05

    async def exchange(
        self,
        request: bytes,
        framer: Framer,
        accept: Callable[[bytes], bool],
        *,
        reply_size: int = 64,
        turnaround_s: float | None = None,
        retries: int | None = None,
        once: bool = False,
        secret: bool = False,
    ) -> tuple[bytes, float]:
        """Send ``request`` and return ``(frame, round_trip_s)`` for the first frame ``accept`` takes.
        (``secret``: the request carries a password; a bus we connect out to sends it as any other.)

        Raises ExchangeTimeout after ``retries`` + 1 tries, ChannelUnavailable if the bus is down.
        ``once`` (a relay command): the request goes out at most once, with no retry, and a connection
        closed or replaced after it went out raises :class:`ReplyLost` instead of sending it again.
        """
        tries = 1 if once else 1 + (self.config.retries if retries is None else retries)
        timeout = self.timeout_for(len(request), reply_size, turnaround_s)
        stats = self.stats
        loop = asyncio.get_running_loop()
        async with self._lock:
            started = loop.time()
            try:
                for attempt in range(tries):
                    if attempt:
                        stats.retries += 1
                    frame = await self._attempt(loop, request, framer, accept, timeout, once)
                    if self.tap is not None:
                        self.tap("rx" if frame is not None else "timeout", frame or b"")
                    if frame is not None:
                        rtt = loop.time() - self._sent_at
                        stats.rtt_count += 1
                        stats.rtt_total_s += rtt
                        if rtt > stats.rtt_max_s:
                            stats.rtt_max_s = rtt
                        return frame, rtt
                stats.timeouts += 1
                raise ExchangeTimeout(tries, noise=framer.noise_bytes > 0 or framer.checksum_errors > 0)
            finally:
                self._last_activity = loop.time()
                stats.busy_s += self._last_activity - started

    async def send_only(self, request: bytes) -> None:
        """Send a frame that gets no reply (broadcast), then keep the bus quiet for one frame time."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            await self._wait_gap(loop)
            link = await self._ensure_open()
            self._write(link, request)
            if self.tap is not None:
                self.tap("tx", request)
            await self._drain(link)
            await asyncio.sleep(len(request) * self.config.char_time + self.config.gap_s)
            self._last_activity = loop.time()

    async def _wait_gap(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the line quiet for the gap after the last exchange, ending on the shared slack grid."""
        ready = self._last_activity + self.config.gap_s
        if ready > loop.time():
            waiter: asyncio.Future[None] = loop.create_future()
            _slots_of(loop).call_at(_on_grid(ready), _release, waiter)
            await waiter

    def _write(self, link: _Link, data: bytes) -> None:
        try:
            if link.closed:
                raise ConnectionResetError("connection lost")
            link.transport.write(data)  # type: ignore[union-attr]
        except (OSError, ConnectionError) as exc:
            self._lost(exc)
        self.stats.bytes_out += len(data)
        self.stats.frames_out += 1

    async def _drain(self, link: _Link) -> None:
        """Wait while the transport holds more than its high-water mark (a stalled serial server)."""
        try:
            await link.drain()
        except (OSError, ConnectionError) as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> NoReturn:
        self._drop()
        raise ChannelUnavailable(f"{self.label}: connection lost: {exc}") from None

    async def _attempt(
        self,
        loop: asyncio.AbstractEventLoop,
        request: bytes,
        framer: Framer,
        accept: Callable[[bytes], bool],
        timeout: float,
        once: bool = False,
    ) -> bytes | None:
        """One try: the request goes out at the end of the gap (from a timer callback, so this task
        wakes only for the outcome), then the reply, a timeout or a lost link resolves the waiter."""
        gap_end = self._last_activity + self.config.gap_s
        link = self._link
        while True:
            waiter: asyncio.Future[Any] = loop.create_future()
            self._written = False
            self._counted = (framer.checksum_errors, framer.noise_bytes)
            if link is not None and not link.closed and gap_end > loop.time():
                _slots_of(loop).call_at(
                    _on_grid(gap_end), self._send, loop, link, request, framer, accept, timeout, waiter
                )
            else:
                if gap_end > loop.time():
                    await self._wait_gap(loop)
                link = await self._ensure_open()
                self._send(loop, link, request, framer, accept, timeout, waiter)
            try:
                frame = await waiter
                if frame is None:  # timed out: what the framer holds (a truncated reply) is noise
                    framer.reset()
            except ChannelUnavailable:
                if self._link is link:
                    self._drop()
                if once and self._written:
                    raise ReplyLost("connection closed") from None
                raise
            finally:
                self._waiter = None
                if link.waiter is waiter:
                    link.unlisten()
                errors_before, noise_before = self._counted
                self.stats.checksum_errors += framer.checksum_errors - errors_before
                self.stats.noise_bytes += framer.noise_bytes - noise_before
            if frame is not _REOPEN:
                return frame
            if once and self._written:
                raise ReplyLost("connection replaced")
            link = None  # the link closed during the gap or moved: reconnect and send now

    def _send(
        self,
        loop: asyncio.AbstractEventLoop,
        link: _Link,
        request: bytes,
        framer: Framer,
        accept: Callable[[bytes], bool],
        timeout: float,
        waiter: asyncio.Future[Any],
    ) -> None:
        """Drop stale input, send the request and listen for the reply until ``timeout``."""
        if waiter.done():  # the exchange was cancelled during the gap
            return
        if link.closed:
            waiter.set_result(_REOPEN)
            return
        try:
            self._discard_stale(link)
            framer.reset()
            framer.expect_echo(request)
            try:
                link.transport.write(request)  # type: ignore[union-attr]
            except (OSError, ConnectionError) as exc:
                waiter.set_exception(ChannelUnavailable(f"{self.label}: connection lost: {exc}"))
                return
            self._written = True
            self.stats.bytes_out += len(request)
            self.stats.frames_out += 1
            if self.tap is not None:
                self.tap("tx", request)
            self._counted = (framer.checksum_errors, framer.noise_bytes)
            self._sent_at = loop.time()
            self._listen(loop, waiter, self._sent_at + timeout)
            link.listen(waiter, framer, accept)
        except Exception as exc:  # a bug fails this exchange only, never the other buses in the slot
            if not waiter.done():
                waiter.set_exception(exc)

    def _listen(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], deadline: float) -> None:
        """Make ``waiter`` resolve with None at ``deadline`` unless a reply comes first."""
        self._waiter, self._deadline = waiter, deadline
        expiry = self._expiry
        if expiry is None or expiry.when() > deadline:
            if expiry is not None:
                expiry.cancel()
            self._expiry = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The channel's timer fired: time out the listening attempt, or re-arm for its later deadline."""
        self._expiry = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._deadline - loop.time() <= 0.001:
            waiter.set_result(None)
        else:
            self._expiry = loop.call_at(self._deadline, self._expire, loop)

    def _discard_stale(self, link: _Link) -> None:
        """Drop late replies and noise that arrived between exchanges (counted as noise)."""
        if link.stale:
            self.stats.noise_bytes += link.stale
            link.stale = 0
