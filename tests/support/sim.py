"""Test helpers for simulated buses: a raw byte client over TCP or pty, a pymodbus client for Modbus buses."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from protocols.dlt645 import Deframer, Frame, decode
from simulators import BusSpec, SimBus, start_bus
from simulators.modbus_server import ModbusBus


class RawClient:
    """Writes request bytes and collects whole frames from a bus endpoint."""

    def __init__(
        self, reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter | None, fd: int | None
    ):
        self._reader, self._writer, self._fd = reader, writer, fd
        self.deframer = Deframer()
        self.received = bytearray()

    @classmethod
    async def connect(cls, bus: SimBus) -> RawClient:
        if bus.url.startswith("tcp://"):
            host, port = bus.url[len("tcp://") :].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            return cls(reader, writer, None)
        fd = os.open(bus.url[len("serial://") :].partition("?")[0], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        return cls(None, None, fd)

    async def _read_chunk(self, timeout: float) -> bytes:
        if self._reader is not None:
            return await asyncio.wait_for(self._reader.read(4096), timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return os.read(self._fd, 4096)
            except BlockingIOError:
                await asyncio.sleep(0.002)
        raise TimeoutError

    async def send(self, request: bytes) -> None:
        if self._writer is not None:
            self._writer.write(request)
            await self._writer.drain()
        else:
            os.write(self._fd, request)

    async def frames(self, count: int = 1, timeout: float = 1.0) -> list[bytes]:
        """Up to ``count`` frames arriving within ``timeout`` seconds."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                chunk = await self._read_chunk(remaining)
            except TimeoutError:
                break
            self.received += chunk
            out += self.deframer.feed(chunk)
        return out

    async def ask(self, request: bytes, timeout: float = 1.0) -> Frame | None:
        """Send a request and decode the first reply frame (None if nothing arrives)."""
        await self.send(request)
        frames = await self.frames(1, timeout)
        return decode(frames[0]) if frames else None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._fd is not None:
            os.close(self._fd)


@asynccontextmanager
async def running_bus(**spec: object) -> AsyncIterator[tuple[SimBus, RawClient]]:
    """A started bus and a raw client connected to it; both closed afterwards."""
    bus = await start_bus(BusSpec(**spec))  # type: ignore[arg-type]
    client = await RawClient.connect(bus)
    try:
        yield bus, client
    finally:
        await client.close()
        await bus.stop()


def modbus_client(url: str, timeout: float = 0.5) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """A pymodbus client (not connected) for a Modbus bus url: modbus-tcp://, rtu-over-tcp:// or serial://."""
    scheme, rest = url.split("://", 1)
    if scheme == "serial":
        path = rest.partition("?")[0]  # the line options the URL carries are the pty's: 8N1
        return AsyncModbusSerialClient(path, baudrate=9600, parity="N", timeout=timeout, retries=0)
    host, port = rest.rsplit(":", 1)
    framer = FramerType.SOCKET if scheme == "modbus-tcp" else FramerType.RTU
    return AsyncModbusTcpClient(host, port=int(port), framer=framer, timeout=timeout, retries=0)


@asynccontextmanager
async def running_modbus_bus(**spec: object) -> AsyncIterator[tuple[ModbusBus, AsyncModbusTcpClient]]:
    """A started Modbus bus (``BusSpec`` fields, protocol="modbus") and a connected pymodbus client."""
    bus = await start_bus(BusSpec(protocol="modbus", **spec))  # type: ignore[arg-type]
    assert isinstance(bus, ModbusBus)
    client = modbus_client(bus.url)
    await client.connect()
    try:
        yield bus, client  # type: ignore[misc]
    finally:
        client.close()
        await bus.stop()
