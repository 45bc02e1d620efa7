"""Modbus channels: a pymodbus client per bus (Modbus TCP, RTU over TCP, or RTU on a serial port).

One client per gateway/bus; pymodbus serialises requests on a client, and the channel's own lock
keeps one exchange at a time with the inter-frame gap. Retries are the channel's, not pymodbus'.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from headend.transport.bus import FrameBus
from headend.transport.channel import ChannelStats, ChannelUnavailable, ExchangeTimeout, FrameTap
from headend.transport.url import ChannelConfig
from protocols.modbus import rtu

# pymodbus's own log lines (frame dumps, "No response received after 0 retries") never reach the
# user's terminal or the daemon's log: its failures come back as exceptions, said once in our words
logging.getLogger("pymodbus").addHandler(logging.NullHandler())
logging.getLogger("pymodbus").propagate = False


class ModbusError(Exception):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        super().__init__(f"Modbus exception {code}")
        self.code = code


class ModbusChannel:
    """A bus reached through pymodbus (see the module docstring)."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self.stats = ChannelStats()
        self._lock = asyncio.Lock()
        self._last = 0.0
        self.tap: FrameTap | None = None  # sees every ADU sent ("tx") and received ("rx")
        timeout = config.turnaround_s + 0.3
        if config.scheme == "serial":
            self.client: AsyncModbusTcpClient | AsyncModbusSerialClient = AsyncModbusSerialClient(
                config.path,
                framer=FramerType.RTU,
                baudrate=config.baud,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
                timeout=timeout,
                retries=0,
                trace_packet=self._trace,
            )
        else:
            framer = FramerType.SOCKET if config.scheme == "modbus-tcp" else FramerType.RTU
            self.client = AsyncModbusTcpClient(
                config.host,
                port=config.port,
                framer=framer,
                timeout=timeout,
                retries=0,
                reconnect_delay=0.5,
                reconnect_delay_max=30,
                trace_packet=self._trace,
            )

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus's packet hook: tell the tap, change nothing."""
        if self.tap is not None:
            self.tap("tx" if sending else "rx", packet)
        return packet

    @property
    def label(self) -> str:
        return self.config.label

    async def open(self) -> None:
        """Connect (also done lazily by the first exchange)."""
        if not self.client.connected and not await self.client.connect():
            raise ChannelUnavailable(f"{self.label}: cannot connect")

    async def close(self) -> None:
        self.client.close()

    async def call(
        self, function: int, address: int, *, unit: int, count: int = 1, values: list[int] | None = None
    ) -> list[int]:
        """One Modbus request (3/4 read, 5/6/16 write) with retries; returns the registers or bits read."""
        async with self._lock:
            tries = 1 + self.config.retries
            for attempt in range(tries):
                if attempt:
                    self.stats.retries += 1
                wait = self._last + self.config.gap_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                started = time.monotonic()
                try:
                    await self.open()
                    response = await self._request(function, address, unit, count, values)
                except ModbusIOException:
                    continue
                except (ConnectionException, OSError) as exc:
                    raise ChannelUnavailable(f"{self.label}: {exc}") from None
                finally:
                    self._last = time.monotonic()
                    self.stats.frames_out += 1
                rtt = self._last - started
                self.stats.rtt_count += 1
                self.stats.rtt_total_s += rtt
                self.stats.rtt_max_s = max(self.stats.rtt_max_s, rtt)
                if response.isError():
                    raise ModbusError(getattr(response, "exception_code", 0))
                self.stats.frames_in += 1
                return list(getattr(response, "registers", None) or getattr(response, "bits", []) or [])
            self.stats.timeouts += 1
            raise ExchangeTimeout(tries, noise=False)

    async def _request(self, function: int, address: int, unit: int, count: int, values: list[int] | None):
        client = self.client
        if function == 3:
            return await client.read_holding_registers(address, count=count, device_id=unit)
        if function == 4:
            return await client.read_input_registers(address, count=count, device_id=unit)
        if function == 16:
            return await client.write_registers(address, values or [], device_id=unit)
        if function == 6:
            return await client.write_register(address, (values or [0])[0], device_id=unit)
        if function == 5:
            return await client.write_coil(address, bool((values or [0])[0]), device_id=unit)
        raise ValueError(f"unsupported Modbus function {function}")


class RtuLink:
    """Modbus RTU on a raw channel (serial port or transparent serial server) shared with DL/T 645:
    adapts a ``FrameBus`` to a ``RegisterBus``."""

    def __init__(self, channel: FrameBus) -> None:
        self.channel = channel
        self.label = channel.label

    async def call(
        self, function: int, address: int, *, unit: int, count: int = 1, values: list[int] | None = None
    ) -> list[int]:
        """Same contract as ``ModbusChannel.call``, framed with protocols.modbus.rtu on the raw channel."""
        request = rtu.build_request(unit, function, address, count, values)
        framer = rtu.RtuDeframer(unit, function, count)
        frame, _ = await self.channel.exchange(
            request, framer, lambda _frame: True, reply_size=rtu.reply_size(function, count)
        )
        result = rtu.parse_reply(frame)
        if isinstance(result, int):
            raise ModbusError(-result)
        return result
