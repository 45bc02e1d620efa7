"""A small master station for tests, written with the 1376.1 codec: a listening socket on 127.0.0.1
that accepts concentrators, confirms logins and heartbeats (unless told not to), sends requests and
collects the (multi-frame) answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from protocols.gdw1376 import (
    ALL_CONFIRMED,
    Afn,
    Deframer,
    Frame,
    Unit,
    build_request,
    confirm,
    decode,
)
from tests.support.waiting import wait_until


class MasterConnection:
    """One accepted concentrator connection: link tests are logged (and confirmed), the rest queued."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_confirm: bool
    ) -> None:
        self.reader, self.writer = reader, writer
        self.auto_confirm = auto_confirm
        self.link_tests: list[Frame] = []
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._seq = 0
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        deframer = Deframer()
        try:
            while chunk := await self.reader.read(4096):
                for raw in deframer.feed(chunk):
                    frame = decode(raw)
                    if frame.afn == Afn.LINK_TEST:
                        self.link_tests.append(frame)
                        if self.auto_confirm:
                            await self.confirm(frame)
                    else:
                        self.frames.put_nowait(frame)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    async def confirm(self, frame: Frame) -> None:
        self.writer.write(confirm(frame.address, frame.seq.seq, ALL_CONFIRMED))
        await self.writer.drain()

    async def wait_link_tests(self, count: int, timeout: float = 5.0) -> list[Frame]:
        await wait_until(lambda: len(self.link_tests) >= count, timeout, f"{count} link tests")
        return self.link_tests

    async def send(self, afn: int, units: Sequence[Unit], *, pw: bytes | None = None) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) & 0x0F
        frame = self.link_tests[0].address if self.link_tests else None
        assert frame is not None, "no login seen yet"
        self.writer.write(build_request(frame.with_msa(1), afn, units, seq, pw=pw))
        await self.writer.drain()
        return seq

    async def answer(self, timeout: float = 5.0) -> list[Frame]:
        """Frames of one answer: until FIN (a single frame has FIR and FIN)."""
        frames = [await asyncio.wait_for(self.frames.get(), timeout)]
        while not frames[-1].seq.fin:
            frames.append(await asyncio.wait_for(self.frames.get(), timeout))
        return frames

    async def ask(
        self, afn: int, units: Sequence[Unit], *, timeout: float = 5.0, **kwargs: Any
    ) -> list[Frame]:
        seq = await self.send(afn, units, **kwargs)
        frames = await self.answer(timeout)
        assert frames[0].seq.seq == seq, (frames[0].seq, seq)
        return frames

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()


class MasterStation:
    """The listening side; ``connections`` yields each accepted concentrator connection."""

    def __init__(self, auto_confirm: bool = True) -> None:
        self.auto_confirm = auto_confirm
        self.connections: asyncio.Queue[MasterConnection] = asyncio.Queue()
        self._all: list[MasterConnection] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> MasterStation:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = MasterConnection(reader, writer, self.auto_confirm)
        self._all.append(connection)
        self.connections.put_nowait(connection)

    async def next_connection(self, timeout: float = 10.0) -> MasterConnection:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def stop(self) -> None:
        for connection in self._all:
            await connection.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
