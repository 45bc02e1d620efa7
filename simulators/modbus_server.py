"""A simulated Modbus bus: pymodbus 3.16 SimDevices bound live to meter models through register maps.

Each meter is a :class:`simulators.meter.SimMeter` exposed through a register map from
``protocols/models`` (``protocols.modbus``). Reads refresh the requested registers from the meter
model at that moment (energy keeps growing); a write of the model's relay register with the model's
relay write function trips or closes the relay; any other write is refused with ILLEGAL_ADDRESS,
and the relay register written with the wrong function code with ILLEGAL_FUNCTION (the Hiking
DDS238 rejects FC06). Unit ids that are not on the bus, and offline or unpowered meters, stay silent
like a real RS-485 bus (pymodbus itself would answer exception 4).

Transports: ``modbus-tcp`` (MBAP), ``rtu-over-tcp`` (RTU frames on a TCP socket, like a transparent
serial server), ``pty`` (RTU on a virtual serial port; the url names the port a client opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus import ModbusModel, load_modbus_model
from simulators.clock import TimeSource
from simulators.endpoints import serial_url
from simulators.faults import FaultInjector, FaultPlan, FaultSpec, ScheduledFault
from simulators.meter import RelayRefused, SimMeter

if TYPE_CHECKING:
    from simulators.bus import BusSpec

# pymodbus's frame dumps never reach the terminal of `headend sim modbus` (or a test's output)
logging.getLogger("pymodbus").addHandler(logging.NullHandler())
logging.getLogger("pymodbus").propagate = False
MODBUS_TRANSPORTS = ("modbus-tcp", "rtu-over-tcp", "pty")
OPERATOR = "MODBUS00"


class ModbusMeter:
    """One meter on a Modbus bus: unit id, register map and the live meter model."""

    def __init__(
        self,
        unit_id: int,
        regmap: ModbusModel,
        model: SimMeter,
        before_reply: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.before_reply = before_reply
        self.address = str(unit_id)
        self.regmap = regmap
        self.model = model
        self.requests: Counter[int] = Counter()

    def values(self) -> dict[str, float]:
        """Every mapped quantity as the meter would report it now."""
        model = self.model
        model.advance()
        values: dict[str, float] = dict(model.instantaneous())
        values["energy_import_kwh"] = round(model.registers.import_kwh, 2)
        values["energy_export_kwh"] = round(model.registers.export_kwh, 2)
        values["reactive_power_kvar"] = values.get("reactive_kvar", 0.0)
        if self.regmap.relay is not None:
            values["relay"] = self.regmap.relay.value_for(closed=not model.relay.open)
        return values

    def device(self) -> SimDevice:
        """The pymodbus SimDevice: one register block per function spanning the mapped points."""
        blocks: dict[int, list[SimData]] = {3: [], 4: []}
        for function in (3, 4):
            points = [p for p in self.regmap.points.values() if p.function == function]
            if points:
                start = min(p.address for p in points)
                count = max(p.end for p in points) - start
                blocks[function] = [SimData(start, count=count, values=0, datatype=DataType.REGISTERS)]
            else:
                blocks[function] = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(self.unit_id, simdata=(bits, bits, blocks[3], blocks[4]), action=self.on_access)

    async def on_access(
        self,
        function: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Refresh registers on reads; emulate the relay on writes."""
        self.requests[function] += 1
        if self.before_reply is not None:
            await self.before_reply()
        if set_values is not None:
            return self._write(function, address, count, [int(v) for v in set_values])
        read_fc = 3 if function in (3, 6, 16) else 4
        end = address + count
        values = self.values()
        for point in self.regmap.points.values():
            if point.function == read_fc and point.address < end and point.end > address:
                offset = point.address - start
                registers[offset : offset + point.count] = point.encode(values.get(point.name, 0.0))
        return None

    def _write(self, function: int, address: int, count: int, values: list[int]) -> ExcCodes | None:
        relay = self.regmap.relay
        if relay is None or address != relay.address or count != 1:
            return ExcCodes.ILLEGAL_ADDRESS
        if function != relay.write_function:
            return ExcCodes.ILLEGAL_FUNCTION
        closed = relay.is_closed(values[0])
        if closed is None:
            return ExcCodes.ILLEGAL_VALUE
        try:
            if closed:
                self.model.close(OPERATOR, direct=True)
            else:
                self.model.trip(OPERATOR)
        except RelayRefused:
            return ExcCodes.DEVICE_FAILURE
        return None


class ModbusBus:
    """A running Modbus bus; same surface as ``SimBus`` (url, meters, requests, fault_counts, stop)."""

    def __init__(self, spec: BusSpec) -> None:
        if spec.transport not in MODBUS_TRANSPORTS:
            raise ValueError(
                f"unsupported Modbus transport {spec.transport!r} ({', '.join(MODBUS_TRANSPORTS)})"
            )
        fault_spec = FaultSpec.parse(spec.faults)
        # ``late`` delays the device action, not the frame on the wire: planned per request
        late = FaultSpec(rates={"late": fault_spec.rates.pop("late", 0.0)})
        late.at = {i: k for i, k in fault_spec.at.items() if k == "late"}
        fault_spec.at = {i: k for i, k in fault_spec.at.items() if k != "late"}
        self._late_plan = FaultPlan(late, spec.seed + 2)
        self._late_delay_s = fault_spec.late_delay_s
        self._requests_seen = 0
        self.spec = spec
        self.regmap = load_modbus_model(spec.model or "eastron_sdm120")
        self.source = TimeSource(speed=spec.speed)
        self.meters: list[ModbusMeter] = []
        for index in range(spec.meters):
            model = SimMeter(
                f"{index + 1:012d}",
                seed=spec.seed * 100_003 + index,
                source=self.source,
                phases=self.regmap.phases,
                utc_offset=timedelta(hours=spec.utc_offset_h),
                clock_offset_s=spec.clock_offsets_s.get(index, 0.0),
                load_scale=spec.load_scale,
                trip_delay_s=spec.trip_delay_s,
                prepaid_balance=spec.prepaid_balance,
                history_days=spec.history_days,
                profile_period_s=spec.profile_period_s,
            )
            self.meters.append(ModbusMeter(index + 1, self.regmap, model, self._maybe_late))
        self._by_unit = {m.unit_id: m for m in self.meters}
        self.faults = FaultInjector(fault_spec, seed=spec.seed + 1)
        self.packets_received = 0  # every request packet on the wire, including ones for absent units
        self._tasks: list[asyncio.Task[None]] = []
        self._ptys: list[int] = []
        self._url = ""
        self.server: ModbusTcpServer | ModbusSerialServer | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def requests(self) -> Counter[int]:
        """Requests that reached a meter, by function code."""
        total: Counter[int] = Counter()
        for meter in self.meters:
            total.update(meter.requests)
        return total

    @property
    def fault_counts(self) -> Counter[str]:
        return self.faults.counts

    def meter(self, unit_id: int) -> ModbusMeter:
        return self._by_unit[unit_id]

    async def _maybe_late(self) -> None:
        """The ``late`` fault: hold the reply back by ``late_delay`` seconds (counted)."""
        index = self._requests_seen
        self._requests_seen += 1
        if self._late_plan.fault_at(index) == "late":
            self.faults.counts["late"] += 1
            await asyncio.sleep(self._late_delay_s)

    def _filter(self, sending: bool, data: bytes) -> bytes:
        """Silence absent/offline units and apply reply faults (pymodbus trace_packet hook)."""
        if not sending:
            self.packets_received += 1 if data else 0
            return data
        if not data:
            return data
        unit = data[6] if self.spec.transport == "modbus-tcp" and len(data) > 6 else data[0]
        meter = self._by_unit.get(unit)
        if meter is None or meter.model.offline or not meter.model.powered:
            return b""
        outcome = self.faults.apply(data)
        return outcome.data or b""

    async def start(self) -> ModbusBus:
        devices = [m.device() for m in self.meters]
        transport = self.spec.transport
        if transport == "pty":
            server_port, client_port = self._pty_pair()
            self.server = ModbusSerialServer(
                devices,
                port=server_port,
                baudrate=self.spec.baud,
                framer=FramerType.RTU,
                trace_packet=self._filter,
            )
            self._url = serial_url(client_port, self.spec.baud, "N")  # the server's framing: 8N1
        else:
            framer = FramerType.SOCKET if transport == "modbus-tcp" else FramerType.RTU
            self.server = ModbusTcpServer(
                devices, address=(self.spec.host, self.spec.port), framer=framer, trace_packet=self._filter
            )
        await self.server.serve_forever(background=True)
        listener = self.server.transport  # a TCP server's transport is its asyncio listening server
        if isinstance(listener, asyncio.Server):
            port = listener.sockets[0].getsockname()[1]
            self._url = f"{transport}://{self.spec.host}:{port}"
        for fault in self.faults.spec.schedule:
            self._tasks.append(asyncio.create_task(self._scheduled(fault)))
        return self

    def _pty_pair(self) -> tuple[str, str]:
        """Two pty pairs joined by a byte pump between the masters: two openable serial ports."""
        loop = asyncio.get_running_loop()
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        self._ptys = [m1, s1, m2, s2]
        loop.add_reader(m1, self._pump, m1, m2)
        loop.add_reader(m2, self._pump, m2, m1)
        return os.ttyname(s1), os.ttyname(s2)

    @staticmethod
    def _pump(source: int, target: int) -> None:
        with contextlib.suppress(OSError):
            os.write(target, os.read(source, 4096))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.shutdown()
        loop = asyncio.get_running_loop()
        for fd in self._ptys[::2]:
            loop.remove_reader(fd)
        for fd in self._ptys:
            os.close(fd)
        self._ptys = []

    async def __aenter__(self) -> ModbusBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "modbus",
            "model": self.regmap.name,
            "url": self.url,
            "baud": self.spec.baud,
            "meters": [m.unit_id for m in self.meters],
        }

    async def _scheduled(self, fault: ScheduledFault) -> None:
        await asyncio.sleep(fault.at_s)
        if fault.meter == "*":
            targets = self.meters
        else:
            targets = [
                self.meters[int(fault.meter[1:])]
                if fault.meter.startswith("#")
                else self.meter(int(fault.meter))
            ]
        self.faults.counts[fault.kind] += 1
        if fault.kind == "clock_jump":
            for meter in targets:
                meter.model.clock.jump(fault.amount)
            return
        for meter in targets:
            if fault.kind == "offline":
                meter.model.offline = True
            else:
                meter.model.power_off()
        await asyncio.sleep(fault.amount)
        for meter in targets:
            if fault.kind == "offline":
                meter.model.offline = False
            else:
                meter.model.power_on()
