"""Bus endpoints: a TCP listener behaving like a transparent serial server, and a pty pair.

An endpoint moves bytes between the client and the bus's ``serve`` coroutine: it deframes requests
and writes replies. With line timing, the request's own transmission time is waited out and replies
are released at the configured baud, so throughput is what a real RS-485 line gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Awaitable, Callable

from protocols.dlt645 import Deframer

Write = Callable[[bytes], Awaitable[None]]
Serve = Callable[[bytes, Write], Awaitable[None]]


def bits_per_char(frame_format: str) -> int:
    """Bits on the wire per character for a format like ``8E1`` (start + data + parity + stop)."""
    if len(frame_format) != 3 or not frame_format[0].isdigit() or frame_format[1] not in "NEO":
        raise ValueError(f"frame format must look like 8E1, got {frame_format!r}")
    data, parity, stop = int(frame_format[0]), frame_format[1], int(frame_format[2])
    return 1 + data + (0 if parity == "N" else 1) + stop


class LinePacer:
    """Releases bytes at the line rate (or at once without line timing)."""

    def __init__(self, baud: int, frame_format: str, enabled: bool) -> None:
        self.char_time = bits_per_char(frame_format) / baud
        self.enabled = enabled

    async def transmit_time(self, size: int) -> None:
        """Wait as long as ``size`` characters take on the line."""
        if self.enabled:
            await asyncio.sleep(size * self.char_time)

    async def write(self, data: bytes, send: Write) -> None:
        """Send ``data`` at line speed (in slices of about 10 ms), or at once without line timing."""
        if not self.enabled:
            await send(data)
            return
        loop = asyncio.get_running_loop()
        per_slice = max(1, int(0.01 / self.char_time))
        start = loop.time()
        for offset in range(0, len(data), per_slice):
            delay = start + offset * self.char_time - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(data[offset : offset + per_slice])
        await asyncio.sleep(max(0.0, start + len(data) * self.char_time - loop.time()))


class TcpEndpoint:
    """A TCP listener on 127.0.0.1; every connection talks to the same (shared) bus."""

    def __init__(self, serve: Serve, frame_source: Callable[[], Deframer], host: str, port: int) -> None:
        self._serve = serve
        self._frame_source = frame_source
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        deframer = self._frame_source()

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            while chunk := await reader.read(4096):
                for frame in deframer.feed(chunk):
                    await self._serve(frame, send)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=2.0)
            await self._server.wait_closed()


def serial_url(path: str, baud: int, parity: str) -> str:
    """The ``serial://`` URL a client opens as printed: line settings the channel does not default
    to (2400 baud, even parity) are spelled out."""
    options = [f"baud={baud}"] if baud != 2400 else []
    options += [f"parity={parity}"] if parity != "E" else []
    return f"serial://{path}" + (f"?{'&'.join(options)}" if options else "")


class PtyEndpoint:
    """A pseudo-terminal: clients open ``path`` like a serial port; the bus holds the master side."""

    def __init__(self, serve: Serve, frame_source: Callable[[], Deframer]) -> None:
        self._serve = serve
        self._deframer = frame_source()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"serial://{self.path}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master, self._readable)
        self._task = asyncio.create_task(self._run())

    def _readable(self) -> None:
        try:
            chunk = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        for frame in self._deframer.feed(chunk):
            self._queue.put_nowait(frame)

    async def _run(self) -> None:
        async def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
                    continue
                view = view[written:]

        while True:
            frame = await self._queue.get()
            await self._serve(frame, send)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        os.close(self._master)
        os.close(self._slave)
