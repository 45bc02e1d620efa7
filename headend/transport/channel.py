"""A channel owns one physical bus (a serial port or a TCP serial server) and runs one exchange at a time.

An exchange: wait out the inter-frame gap, drop stale input, send the request, and collect frames
with the caller's deframer until one is accepted or the timeout (turnaround + line time of request
and expected reply) expires; then retry. The channel reconnects a dropped TCP link with backoff and
counts bytes, frames, timeouts, checksum errors, noise and round-trip times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from headend.transport.url import ChannelConfig

MAX_BACKOFF_S = 30.0


class ChannelError(Exception):
    """Base of transport errors."""


class ChannelUnavailable(ChannelError):
    """The port cannot be opened or the serial server cannot be reached."""


class ExchangeTimeout(ChannelError):
    """No acceptable reply within the timeout, after every try."""

    def __init__(self, tries: int, noise: bool) -> None:
        detail = " (only garbage or damaged frames on the line)" if noise else ""
        super().__init__(f"timeout after {tries} tr{'y' if tries == 1 else 'ies'}{detail}")
        self.tries = tries
        self.noise = noise


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


class Channel:
    """A raw byte channel over serial or TCP (see the module docstring)."""

    def __init__(self, config: ChannelConfig, connect_timeout_s: float = 3.0) -> None:
        self.config = config
        self.stats = ChannelStats()
        self.connect_timeout_s = connect_timeout_s
        self._lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._last_activity = 0.0
        self._failures = 0
        self._next_attempt = 0.0

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

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
        self._writer = None
        self._pump = None

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        """Move received bytes into the queue; an empty chunk marks a closed link."""
        try:
            while chunk := await reader.read(4096):
                self._incoming.put_nowait(chunk)
        except (OSError, ConnectionError):
            pass
        self._incoming.put_nowait(b"")

    async def _ensure_open(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return
        now = time.monotonic()
        if now < self._next_attempt:
            raise ChannelUnavailable(
                f"{self.label}: reconnect backoff, next try in {self._next_attempt - now:.1f} s"
            )
        try:
            reader, self._writer = await asyncio.wait_for(self._connect(), self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            self._failures += 1
            self._next_attempt = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
            reason = "port busy or missing" if self.config.scheme == "serial" else "cannot connect"
            raise ChannelUnavailable(f"{self.label}: {reason}: {exc or type(exc).__name__}") from None
        self._discard_stale()
        self._pump = asyncio.create_task(self._read_forever(reader))
        if self._failures:
            self.stats.reconnects += 1
        self._failures = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.config
        if config.scheme == "serial":
            import serial_asyncio_fast

            return await serial_asyncio_fast.open_serial_connection(
                url=config.path,
                baudrate=config.baud,
                bytesize=config.bytesize,
                parity=config.parity,  # pyserial uses "N", "E", "O" too
                stopbits=config.stopbits,
                exclusive=True,
            )
        return await asyncio.open_connection(config.host, config.port)

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
    ) -> tuple[bytes, float]:
        """Send ``request`` and return ``(frame, round_trip_s)`` for the first frame ``accept`` takes.

        Raises ExchangeTimeout after ``retries`` + 1 tries, ChannelUnavailable if the bus is down.
        """
        tries = 1 + (self.config.retries if retries is None else retries)
        timeout = self.timeout_for(len(request), reply_size, turnaround_s)
        async with self._lock:
            started = time.monotonic()
            try:
                for attempt in range(tries):
                    if attempt:
                        self.stats.retries += 1
                    frame = await self._attempt(request, framer, accept, timeout)
                    if frame is not None:
                        rtt = time.monotonic() - self._sent_at
                        self.stats.rtt_count += 1
                        self.stats.rtt_total_s += rtt
                        self.stats.rtt_max_s = max(self.stats.rtt_max_s, rtt)
                        return frame, rtt
                self.stats.timeouts += 1
                raise ExchangeTimeout(tries, noise=framer.noise_bytes > 0 or framer.checksum_errors > 0)
            finally:
                self._last_activity = time.monotonic()
                self.stats.busy_s += self._last_activity - started

    async def send_only(self, request: bytes) -> None:
        """Send a frame that gets no reply (broadcast), then keep the bus quiet for one frame time."""
        async with self._lock:
            await self._wait_gap()
            await self._ensure_open()
            await self._write(request)
            await asyncio.sleep(len(request) * self.config.char_time + self.config.gap_s)
            self._last_activity = time.monotonic()

    async def _wait_gap(self) -> None:
        wait = self._last_activity + self.config.gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _write(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            self._drop()
            raise ChannelUnavailable(f"{self.label}: connection lost: {exc}") from None
        self.stats.bytes_out += len(data)
        self.stats.frames_out += 1

    async def _attempt(
        self, request: bytes, framer: Framer, accept: Callable[[bytes], bool], timeout: float
    ) -> bytes | None:
        await self._wait_gap()
        await self._ensure_open()
        self._discard_stale()
        framer.reset()
        framer.expect_echo(request)
        await self._write(request)
        self._sent_at = time.monotonic()
        deadline = self._sent_at + timeout
        errors_before, noise_before = framer.checksum_errors, framer.noise_bytes
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        chunk = await self._incoming.get()
                except TimeoutError:
                    break
                if not chunk:
                    self._drop()
                    raise ChannelUnavailable(f"{self.label}: connection closed by the serial server")
                self.stats.bytes_in += len(chunk)
                for frame in framer.feed(chunk):
                    self.stats.frames_in += 1
                    if accept(frame):
                        return frame
                    self.stats.unexpected_frames += 1
            return None
        finally:
            self.stats.checksum_errors += framer.checksum_errors - errors_before
            self.stats.noise_bytes += framer.noise_bytes - noise_before

    def _discard_stale(self) -> None:
        """Drop late replies and noise that arrived between exchanges."""
        while not self._incoming.empty():
            chunk = self._incoming.get_nowait()
            if not chunk:
                continue
            self.stats.noise_bytes += len(chunk)
