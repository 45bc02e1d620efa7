"""A simulated bus: N meters behind one endpoint (TCP serial server or pty), with line timing and faults.

Usage (in tests, demos and ``headend sim``)::

    async with await start_bus(BusSpec(meters=3, transport="tcp")) as bus:
        bus.url            # "tcp://127.0.0.1:PORT" or "serial:///dev/pts/N"
        bus.meters[0].model.relay.open, bus.meters[0].address
        bus.requests       # Counter of request function codes seen on the bus
        bus.fault_counts   # Counter of injected faults

Only the addressed meter answers; broadcasts get no reply. Meter addresses are deterministic from
the seed. The simulated meters' password defaults to level 02 / ``HEADEND_SIM_PASSWORD`` or
``000000`` (a simulator default for tests, not a head-end secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from protocols.dlt645 import Deframer
from protocols.dlt645.events import EVENT_SOURCES
from simulators.clock import TimeSource
from simulators.conditions import MeterCondition
from simulators.dlt645_server import Dlt645Meter, Dlt645Responder
from simulators.endpoints import LinePacer, PtyEndpoint, TcpEndpoint, Write, serial_url
from simulators.faults import FaultInjector, FaultSpec, ScheduledFault
from simulators.meter import SimMeter
from simulators.modbus_server import ModbusBus

DEFAULT_PASSWORD = "000000"


@dataclass(slots=True)
class BusSpec:
    """Everything that defines one simulated bus."""

    protocol: str = "dlt645"
    edition: int = 2007
    meters: int = 1
    transport: str = "tcp"  # tcp | pty | carried (by a simulated DTU, simulators.dtu)
    host: str = "127.0.0.1"
    port: int = 0
    baud: int = 2400
    frame_format: str = "8E1"
    line_timing: bool = False
    echo: bool = False
    faults: str = ""
    seed: int = 1
    phases: int = 1
    password_level: int = 2
    password: str | None = None
    turnaround_s: float = 0.02
    jitter_s: float = 0.0
    load_scale: float = 1.0
    speed: float = 1.0
    utc_offset_h: float = 8.0
    history_days: int = 7
    profile_period_s: int = 900  # load-profile record interval
    trip_delay_s: float = 0.0
    prepaid_balance: float | None = None
    clock_offsets_s: dict[int, float] = field(default_factory=dict)  # meter index -> clock error
    conditions: dict[int, str] = field(default_factory=dict)  # meter index -> simulators.conditions spec
    addresses: list[str] | None = None
    model: str = ""  # Modbus register map from protocols/models (protocol="modbus")
    block_reads: bool = True  # False: the DL/T 645 meters refuse FF block reads (older meters)
    tariffs: int = 4  # DL/T 645 tariffs in use: energy blocks carry the total and this many


def meter_addresses(seed: int, count: int) -> list[str]:
    """Deterministic, unique 12-digit addresses for a bus."""
    rng = random.Random(seed * 7919 + 1)
    prefix = f"{rng.randrange(100, 1000)}"
    start = rng.randrange(10**8)
    return [f"{prefix}{(start + i) % 10**9:09d}" for i in range(count)]


class SimBus:
    """A running bus (see the module docstring)."""

    def __init__(self, spec: BusSpec) -> None:
        if spec.protocol != "dlt645":
            raise ValueError(f"unsupported simulator protocol {spec.protocol!r}")
        self.spec = spec
        self.source = TimeSource(speed=spec.speed)
        password = spec.password or os.environ.get("HEADEND_SIM_PASSWORD") or DEFAULT_PASSWORD
        addresses = spec.addresses or meter_addresses(spec.seed, spec.meters)
        rng = random.Random(spec.seed)
        self.meters: list[Dlt645Meter] = []
        for index, address in enumerate(addresses):
            model = SimMeter(
                address,
                seed=spec.seed * 100_003 + index,
                source=self.source,
                phases=spec.phases,
                utc_offset=timedelta(hours=spec.utc_offset_h),
                clock_offset_s=spec.clock_offsets_s.get(index, 0.0),
                load_scale=spec.load_scale,
                trip_delay_s=spec.trip_delay_s,
                prepaid_balance=spec.prepaid_balance,
                history_days=spec.history_days,
                profile_period_s=spec.profile_period_s,
            )
            model.condition = MeterCondition.parse(spec.conditions.get(index, ""))
            self.meters.append(
                Dlt645Meter(
                    model,
                    edition=spec.edition,
                    passwords={spec.password_level: password},
                    preamble=rng.choice((0, 2, 4)),
                    turnaround_s=spec.turnaround_s,
                    jitter_s=spec.jitter_s,
                    block_reads=spec.block_reads,
                    tariffs=spec.tariffs,
                )
            )
        self.responder = Dlt645Responder(self.meters, seed=spec.seed)
        self.faults = FaultInjector(FaultSpec.parse(spec.faults), seed=spec.seed + 1)
        for fault in self.faults.spec.control:
            first = int(fault.at_s)
            for meter in self._select(fault.meter):
                meter.control_faults.append((fault.kind, first, first + int(fault.amount) - 1))
                meter.fault_counts = self.faults.counts
        self.pacer = LinePacer(spec.baud, spec.frame_format, spec.line_timing)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.endpoint: TcpEndpoint | PtyEndpoint | None = None
        if spec.transport == "tcp":
            self.endpoint = TcpEndpoint(self.serve, Deframer, spec.host, spec.port)
        elif spec.transport == "pty":
            self.endpoint = PtyEndpoint(self.serve, Deframer)
        elif spec.transport != "carried":
            raise ValueError(f"unsupported transport {spec.transport!r} (tcp or pty)")

    @property
    def url(self) -> str:
        """Where a client connects: ``tcp://127.0.0.1:PORT`` or ``serial:///dev/pts/N`` (with the
        bus's line settings where they differ from a channel's defaults); "" when carried by a DTU."""
        if self.endpoint is None:
            return ""
        if isinstance(self.endpoint, PtyEndpoint):
            return serial_url(self.endpoint.path, self.spec.baud, self.spec.frame_format[1])
        return self.endpoint.url

    @property
    def requests(self) -> Counter[int]:
        """Request frames seen on the bus, by function code."""
        return self.responder.requests

    @property
    def fault_counts(self) -> Counter[str]:
        """Faults injected so far, by kind (rate faults and scheduled ones)."""
        return self.faults.counts

    def meter(self, address: str) -> Dlt645Meter:
        """The meter with this address."""
        return next(m for m in self.meters if m.address == address)

    async def start(self) -> SimBus:
        if self.endpoint is not None:
            await self.endpoint.start()
        for fault in self.faults.spec.schedule:
            self._tasks.append(asyncio.create_task(self._scheduled(fault)))
        for fault in self.faults.spec.events:
            self._tasks.append(asyncio.create_task(self._meter_event(fault)))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.endpoint is not None:
            await self.endpoint.stop()

    async def __aenter__(self) -> SimBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        """What ``headend sim --json`` prints."""
        return {
            "protocol": self.spec.protocol,
            "edition": self.spec.edition,
            "url": self.url,
            "baud": self.spec.baud,
            "frame_format": self.spec.frame_format,
            "line_timing": self.spec.line_timing,
            "meters": [m.address for m in self.meters],
        }

    async def serve(self, request: bytes, send: Write) -> None:
        """One exchange on the bus: echo, line time, turnaround, faults, paced reply."""
        async with self._lock:
            if self.spec.echo:
                await send(request)
            await self.pacer.transmit_time(len(request) + 4)
            loop = asyncio.get_running_loop()
            received = loop.time()
            for reply in self.responder.handle(request):
                outcome = self.faults.apply(reply.data)
                if outcome.data is None:
                    continue
                wait = received + reply.delay + outcome.extra_delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.pacer.write(outcome.data, send)

    async def _scheduled(self, fault: ScheduledFault) -> None:
        kind, amount = fault.kind, fault.amount
        await asyncio.sleep(fault.at_s)
        targets = self._select(fault.meter)
        self.faults.counts[kind] += 1
        if kind == "clock_jump":
            for meter in targets:
                meter.model.clock.jump(amount)
            return
        for meter in targets:
            if kind == "offline":
                meter.model.offline = True
            else:
                meter.model.power_off()
        await asyncio.sleep(amount)
        for meter in targets:
            if kind == "offline":
                meter.model.offline = False
            else:
                meter.model.power_on()

    async def _meter_event(self, fault: ScheduledFault) -> None:
        """A planned meter event: a programming / clear record at once, a condition for its duration."""
        await asyncio.sleep(fault.at_s)
        targets = [m.model for m in self._select(fault.meter)]
        self.faults.counts[fault.kind] += 1
        source = EVENT_SOURCES.get(fault.kind)
        if source is not None and source.layout == "stamp":
            for meter in targets:
                if fault.kind == "meter_clear":  # the registers go back to zero
                    meter.clear()
                else:
                    meter.record_stamp(fault.kind)
            return
        starts = [meter.clock.local() for meter in targets]
        if source is None:  # a status-word condition
            for meter in targets:
                setattr(meter, fault.kind, True)
        await asyncio.sleep(fault.amount)
        for meter, start in zip(targets, starts, strict=True):
            if source is None:
                setattr(meter, fault.kind, False)
            else:
                meter.record_span(fault.kind, start, meter.clock.local())

    def _select(self, selector: str) -> list[Dlt645Meter]:
        if selector == "*":
            return list(self.meters)
        if selector.startswith("#"):
            return [self.meters[int(selector[1:])]]
        return [self.meter(selector)]


async def start_bus(spec: BusSpec) -> SimBus | ModbusBus:
    """Create and start a bus; use it as an async context manager or call ``stop()``."""
    if spec.protocol == "modbus":
        return await ModbusBus(spec).start()
    return await SimBus(spec).start()
