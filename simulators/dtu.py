"""A simulated cellular DTU: dials in to a master, registers, sends heartbeats and carries a simulated bus.

The bus is a DL/T 645 :class:`SimBus` with ``transport="carried"`` (requests served directly) or a
started Modbus :class:`ModbusBus` with ``transport="rtu-over-tcp"`` (bytes relayed to its RTU server).

Usage (tests, demos, benchmarks and ``headend sim dtu``)::

    bus = SimBus(BusSpec(meters=3, transport="carried"))
    dtu = await SimDtu(DtuSpec("DTU-0001", "127.0.0.1", port, heartbeat=b"HB"), bus).start()
    await dtu.bound.wait()  # connected and registered (not proof the master accepted it)

On every connect the DTU sends its registration packet (the id in ASCII by default), then a
heartbeat packet every ``heartbeat_s``, and passes bytes between the connection and the bus. After
a drop it redials with exponential backoff (reset by a connection that carried requests).
Faults (``DtuFaults.parse``, counted in ``counts``):
``drop_mid_reply=RATE`` (half a reply, then the connection drops), ``heartbeat_mid_reply=RATE``
(a heartbeat packet between two halves of a reply), ``duplicate=S`` (S seconds after the first
registration, a second connection registers with the same id and takes over; the old one is left
for the master to close), ``late_registration=S`` (heartbeats only for S seconds after each
connect, then the registration), ``garbage_before=N`` (N noise bytes before the registration),
``drop_control_reply=N`` (the replies to the first N relay control frames (0x1C) are cut in half
and the connection drops: the meter has switched, the master never hears it, the DTU redials).
Whether reply N gets a rate fault depends only on the seed and N, never on redial timing.

``mute()`` makes the connection half-open as seen from the master (the device's network path is
gone without a FIN): the DTU keeps its socket open but sends nothing more, neither replies nor
heartbeats (requests still arriving are counted, not served), and does not redial once the master
closes it.

An impostor (:func:`impostor_bus`): a DTU registering with a real one's id in front of a bus whose
meters answer the real meters' addresses with other values and other meter numbers (04 00 04 02).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections import Counter
from dataclasses import dataclass, field, replace

from protocols.dlt645 import Deframer
from simulators.bus import SimBus
from simulators.endpoints import Write
from simulators.faults import FaultSpecError
from simulators.modbus_server import ModbusBus

RATE_FAULTS = ("drop_mid_reply", "heartbeat_mid_reply")
COUNT_FAULTS = ("garbage_before", "drop_control_reply")
CONTROL = 0x1C  # DL/T 645-2007 relay control
TIME_FAULTS = ("duplicate", "late_registration")
PACKET_GAP_S = 0.02  # keeps a heartbeat in a TCP packet of its own, as a DTU's packetiser does


def impostor_bus(real: SimBus, seed: int) -> SimBus:
    """A bus answering the meter addresses of ``real`` with the values of ``seed`` and meter numbers
    of its own (the real number with its first digit changed)."""
    addresses = [m.address for m in real.meters]
    bus = SimBus(replace(real.spec, seed=seed, addresses=addresses, transport="carried"))
    for meter in bus.meters:
        number = str(meter.model.meter_number)
        meter.model.meter_number = f"{(int(number[0]) + 1) % 10}{number[1:]}"
    return bus


@dataclass(frozen=True, slots=True)
class DtuFaults:
    """Fault settings of a simulated DTU (see the module docstring)."""

    drop_mid_reply: float = 0.0
    heartbeat_mid_reply: float = 0.0
    duplicate: float | None = None
    late_registration: float | None = None
    garbage_before: int = 0
    drop_control_reply: int = 0

    @classmethod
    def parse(cls, text: str) -> DtuFaults:
        """Parse ``name=value,...``; raises FaultSpecError naming the offending item."""
        values: dict[str, float | int] = {}
        known = (*RATE_FAULTS, *TIME_FAULTS, *COUNT_FAULTS)
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name not in known:
                raise FaultSpecError(f"unknown DTU fault {item!r}; known: {', '.join(known)}")
            try:
                number = float(value)
            except ValueError:
                raise FaultSpecError(f"bad value in DTU fault item {item!r}") from None
            if number < 0 or (name in RATE_FAULTS and number > 1):
                raise FaultSpecError(f"out of range in DTU fault item {item!r}")
            values[name] = int(number) if name in COUNT_FAULTS else number
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DtuSpec:
    """Where the DTU dials and how it identifies itself."""

    identity: str
    host: str
    port: int
    registration: bytes | None = None  # default: the identity in ASCII
    heartbeat: bytes = b""
    heartbeat_s: float = 30.0
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    faults: DtuFaults = field(default_factory=DtuFaults)
    seed: int = 1
    tls: ssl.SSLContext | None = None  # dial in over TLS with this client context (its certificate)


class SimDtu:
    """A running simulated DTU (see the module docstring)."""

    def __init__(self, spec: DtuSpec, bus: SimBus | ModbusBus) -> None:
        self.spec = spec
        self.bus = bus
        self.counts: Counter[str] = Counter()
        self.bound = asyncio.Event()  # set while a registered connection is up
        self._rng = random.Random(spec.seed)  # redial jitter and garbage bytes
        self.replies = 0  # index of the next reply: its fault depends only on the seed and the index
        self._task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[None]] = set()
        self._duplicated = False
        self._sending = asyncio.Lock()  # one packet at a time: a heartbeat never splits a reply packet
        self.muted = False  # see ``mute``

    @property
    def registration(self) -> bytes:
        return self.spec.registration or self.spec.identity.encode("ascii")

    async def start(self) -> SimDtu:
        self._task = asyncio.create_task(self._run(), name=f"dtu-{self.spec.identity}")
        return self

    def mute(self) -> None:
        """From now on send nothing and keep the socket open (see the module docstring)."""
        self.muted = True

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._side) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failures = 0
        spec = self.spec
        while True:
            try:
                reader, writer = await asyncio.open_connection(spec.host, spec.port, ssl=spec.tls)
            except OSError:
                self.counts["dial_failed"] += 1
                failures += 1
            else:
                served = self.counts["requests"]
                connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = (reader, writer)
                while connection is not None:
                    connection = await self._session(*connection)
                self.counts["dropped"] += 1
                if self.muted:
                    return
                # a connection that carried requests was healthy; one dropped before any backs off
                failures = 1 if self.counts["requests"] > served else failures + 1
            delay = min(spec.max_backoff_s, spec.backoff_s * 2 ** max(0, failures - 1))
            await asyncio.sleep(delay * (0.5 + self._rng.random()))

    async def _register(self, writer: asyncio.StreamWriter) -> None:
        faults = self.spec.faults
        if faults.garbage_before:
            writer.write(bytes(self._rng.randrange(256) for _ in range(faults.garbage_before)))
            await writer.drain()
            await asyncio.sleep(PACKET_GAP_S)
        if faults.late_registration:
            loop = asyncio.get_running_loop()
            until = loop.time() + faults.late_registration
            while loop.time() < until:
                await self._packet(writer, self.spec.heartbeat)
                await asyncio.sleep(min(self.spec.heartbeat_s, until - loop.time()))
        writer.write(self.registration)
        await writer.drain()
        await asyncio.sleep(PACKET_GAP_S)
        self.counts["registered"] += 1

    async def _packet(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Send ``data`` as a TCP packet of its own (a pause on each side)."""
        if not data:
            return
        await asyncio.sleep(PACKET_GAP_S)
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(PACKET_GAP_S)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Serve one connection; returns the connection that takes over (duplicate fault) or None."""
        self.counts["connects"] += 1
        beating: asyncio.Task[None] | None = None
        superseded = False
        takeover: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
        relay: tuple[asyncio.StreamWriter, asyncio.Task[None]] | None = None
        try:
            await self._register(writer)
            self.bound.set()
            beating = asyncio.create_task(self._beat(writer))
            if self.spec.faults.duplicate is not None and not self._duplicated:
                self._duplicated = True
                takeover = asyncio.create_task(self._duplicate(self.spec.faults.duplicate))
            deframer = Deframer()
            relay = await self._relay(writer) if isinstance(self.bus, ModbusBus) else None
            while True:
                if takeover is None:
                    chunk = await reader.read(4096)
                else:  # also watch for the duplicate connection taking over
                    reading = asyncio.ensure_future(reader.read(4096))
                    await asyncio.wait({reading, takeover}, return_when=asyncio.FIRST_COMPLETED)
                    if takeover.done():
                        reading.cancel()
                        self._linger(reader, writer)  # left open for the master to close
                        superseded = True
                        return takeover.result()
                    chunk = reading.result()
                if not chunk and takeover is not None:  # the master closed us for the new connection
                    self.counts["superseded_closed"] += 1
                    return await takeover
                if not chunk:
                    return None
                bus = self.bus
                if self.muted:
                    self.counts["requests"] += len(deframer.feed(chunk)) if isinstance(bus, SimBus) else 1
                    continue
                if not isinstance(
                    bus, SimBus
                ):  # a Modbus bus: bytes pass through, replies come from the pump
                    assert relay is not None
                    self.counts["requests"] += 1
                    relay[0].write(chunk)
                    continue
                for frame in deframer.feed(chunk):
                    self.counts["requests"] += 1
                    control = frame.lstrip(b"\xfe")[8] & 0x1F == CONTROL
                    async with self._sending:
                        await bus.serve(frame, self._sender(writer, control=control))
        except (ConnectionError, OSError):
            return None
        finally:
            self.bound.clear()
            if relay is not None:
                relay[0].close()
                relay[1].cancel()
            if beating is not None:
                beating.cancel()
            if takeover is not None and not takeover.done():
                takeover.cancel()
            if not superseded:
                writer.close()

    async def _relay(self, writer: asyncio.StreamWriter) -> tuple[asyncio.StreamWriter, asyncio.Task[None]]:
        """Connect to the Modbus bus's RTU-over-TCP server; a pump sends its replies to the master."""
        host, _, port = self.bus.url.partition("://")[2].rpartition(":")
        bus_reader, bus_writer = await asyncio.open_connection(host, int(port))

        async def pump() -> None:
            try:
                while chunk := await bus_reader.read(4096):
                    async with self._sending:
                        await self._sender(writer)(chunk)
            except (ConnectionError, OSError):
                writer.transport.abort()  # a dropped reply drops the connection, as in the DL/T 645 path

        return bus_writer, asyncio.create_task(pump())

    async def _duplicate(self, after_s: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await asyncio.sleep(after_s)
        reader, writer = await asyncio.open_connection(self.spec.host, self.spec.port, ssl=self.spec.tls)
        await self._register(writer)
        self.counts["duplicate"] += 1
        return reader, writer

    def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep a superseded connection open (reading and discarding) until the master closes it."""

        async def drain() -> None:
            try:
                while await reader.read(4096):
                    pass
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self.counts["superseded_closed"] += 1

        task = asyncio.create_task(drain())
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _beat(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.spec.heartbeat_s)
            if self.spec.heartbeat and not self.muted:
                async with self._sending:
                    await self._packet(writer, self.spec.heartbeat)
                self.counts["heartbeats"] += 1

    def _sender(self, writer: asyncio.StreamWriter, *, control: bool = False) -> Write:
        """The bus's ``send`` for one reply, with this reply's fault (if any) applied at its first write."""
        faults = self.spec.faults
        index, self.replies = self.replies, self.replies + 1
        roll = random.Random(f"{self.spec.seed}:{index}").random()  # planned per reply, not by timing
        fault = ""
        if control and self.counts["drop_control_reply"] < faults.drop_control_reply:
            fault = "drop_control_reply"
        elif roll < faults.drop_mid_reply:
            fault = "drop_mid_reply"
        elif roll < faults.drop_mid_reply + faults.heartbeat_mid_reply and self.spec.heartbeat:
            fault = "heartbeat_mid_reply"
        pending = [fault]

        async def send(data: bytes) -> None:
            kind = pending[0]
            pending[0] = ""
            if not kind or len(data) < 2:
                writer.write(data)
                await writer.drain()
                return
            half = len(data) // 2
            self.counts[kind] += 1
            writer.write(data[:half])
            await writer.drain()
            if kind in ("drop_mid_reply", "drop_control_reply"):
                await asyncio.sleep(PACKET_GAP_S)
                writer.transport.abort()
                raise ConnectionResetError("fault: connection dropped mid-reply")
            await self._packet(writer, self.spec.heartbeat)
            writer.write(data[half:])
            await writer.drain()

        return send
