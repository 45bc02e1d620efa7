"""A simulated Q/GDW 1376.1 concentrator that dials in to a master station over TCP.

Usage (tests, ``headend sim concentrator``)::

    sim = SimConcentrator(ConcentratorSpec(host="127.0.0.1", port=9000, address="0314-25394"))
    await sim.start()      # dials, logs in (AFN 02 F1, retried until AFN 00 confirms), heartbeats
    sim.pool.meters        # its DL/T 645 meters; sim.pool.archive: serial -> ArchiveRecord (Pn)
    sim.counts             # Counter: logins, heartbeats, requests by AFN, denials, redials
    await sim.stop()

It answers AFN 0C F2 / F25 / F129, AFN 0D F161 and the curves (F81..F108, F145..F148; the
total-group curves F73..F76 of the groups configured, ``simulators.concentrator_groups``), AFN 0E
F1/F2 (ERC 14 after a power cut, with ACD and EC on every uplink answer until the master has read
the events), AFN 0A F10, AFN 04 F10 (kept archive), AFN 04 / 0A F14 (total groups), AFN 05 F31 (its
clock), and AFN 10 F1 (the
DL/T 645 frame goes to the meter on that port with line timing at the requested baud; the meter's
reply, or nothing after the frame timeout, comes back; a frame sent at another baud than the
meters' or not 8E1 is not understood).
Answers larger than ``max_frame_bytes`` go out as multi-frame replies. Everything else is denied
(AFN 00 F2). One request is served at a time, each after ``latency_ms``.
Faults: see ``simulators.concentrator_faults``.

``ConcentratorSpec(listen=True)`` makes it a terminal with a fixed address instead: it listens on
host:port (port 0 = any; ``sim.bound_port``) for the master to connect, then logs in and heartbeats
on that connection the same way; a newer connection replaces the older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from protocols.gdw1376 import (
    ALL_CONFIRMED,
    ALL_DENIED,
    ALL_POINTS,
    HEARTBEAT,
    LOGIN,
    PER_UNIT,
    Address,
    Afn,
    ArchiveQuery,
    CurveRequest,
    Deframer,
    EventRecords,
    EventRequest,
    ForwardReply,
    ForwardRequest,
    Frame,
    GDW1376Error,
    PowerEvent,
    RawEvent,
    TotalGroup,
    Unit,
    confirm,
    decode,
    link_test,
    response_frames,
)
from protocols.gdw1376.alarms import alarm_record
from protocols.gdw1376.data import ARCHIVE_BAUDS, CURVE_FNS, SNAPSHOT_FN, TOTAL_GROUPS_FN
from simulators.clock import MeterClock, TimeSource
from simulators.concentrator_faults import ConcentratorFaults
from simulators.concentrator_groups import GROUP_CURVE_FNS, TotalGroups
from simulators.concentrator_meters import MeterPool, MeterSetup
from simulators.endpoints import bits_per_char

UNCONFIRMED_HEARTBEATS_LIMIT = 3
METER_LINE_FORMAT = "8E1"  # DL/T 645 meters; a forward at another baud or format is not understood
EVENT_RING = 256


@dataclass(slots=True)
class ConcentratorSpec:
    """Everything that defines one simulated concentrator."""

    host: str = "127.0.0.1"
    port: int = 9000
    address: str = "0314-25394"
    meters: int = 32
    ports: int = 2
    heartbeat_s: float = 60.0
    latency_ms: float = 300.0
    faults: str = ""
    seed: int = 1
    baud: int = 2400  # the meters' line speed (archive default)
    line_timing: bool = True  # forwarded frames take their line time at the requested baud
    tariffs: int = 4
    login_timeout_s: float = 5.0
    login_attempts: int = 3
    redial_s: float = 5.0
    collect_period_s: float = 900.0
    max_frame_bytes: int = 1024
    utc_offset_h: float = 8.0
    history_days: int = 7
    three_phase: int = 0  # the first N meters are three-phase, the others single-phase
    turnaround_s: float = 0.05  # the meters' answer delay
    pw: bytes | None = None  # when set, settings/controls/forwarding with another PW are denied
    listen: bool = False  # wait for the master to connect to host:port instead of dialling it
    total_groups: tuple[TotalGroup, ...] = ()  # the AFN 04 F14 configuration it starts with


class SimConcentrator:
    """A running concentrator (see the module docstring)."""

    def __init__(self, spec: ConcentratorSpec) -> None:
        if spec.baud not in ARCHIVE_BAUDS[1:]:
            raise ValueError(f"meter baud {spec.baud} is not one of {list(ARCHIVE_BAUDS[1:])}")
        self.spec = spec
        self.address = Address.parse(spec.address)
        self.faults = ConcentratorFaults.parse(spec.faults)
        self.source = TimeSource()
        self.clock = MeterClock(self.source, timedelta(hours=spec.utc_offset_h))
        setup = MeterSetup(
            count=spec.meters,
            ports=spec.ports,
            seed=spec.seed,
            baud=spec.baud,
            tariffs=spec.tariffs,
            turnaround_s=spec.turnaround_s,
            utc_offset_h=spec.utc_offset_h,
            history_days=spec.history_days,
            ee_meters=self.faults.ee_meters,
            absent_meters=self.faults.absent_meters,
            three_phase_meters=set(range(spec.three_phase)),
        )
        self.pool = MeterPool(setup, self.source, self.clock)
        self.groups = TotalGroups(spec.total_groups)
        self.counts: Counter[str] = Counter()
        self.events: list[PowerEvent | RawEvent] = []  # important events; pointer = index mod 256
        self.events_read = 0  # events the master has read (ACD clears when all are read)
        self.logged_in = asyncio.Event()
        self.requests_served = 0  # index of the next request's reply in the fault plan
        self._pseq = itertools.count()
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._power_back = asyncio.Event()
        self._power_back.set()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()  # listen mode: the accepted connections
        self.bound_port = spec.port

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> SimConcentrator:
        """Collect once, then dial in (and keep redialling) in the background."""
        self.pool.collect()
        if self.spec.listen:
            self._server = await asyncio.start_server(self._accepted, self.spec.host, self.spec.port)
            self.bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._tasks.append(asyncio.create_task(self._dial_loop()))
        self._tasks.append(asyncio.create_task(self._collect_loop()))
        for at in self.faults.drops_at:
            self._tasks.append(asyncio.create_task(self._at(at, self._drop, "drop")))
        for at in self.faults.relogins_at:
            self._tasks.append(asyncio.create_task(self._at(at, self._relogin, "relogin")))
        for index, at, duration, kind in self.faults.alarms:
            self._tasks.append(asyncio.create_task(self._alarm(index, at, duration, kind)))
        for at, duration in self.faults.power_cuts:
            self._tasks.append(
                asyncio.create_task(self._at(at, lambda d=duration: self._power_cut(d), "power_cut"))
            )
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in list(self._sessions):
            session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session
        self._close()

    async def __aenter__(self) -> SimConcentrator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        """What ``headend sim concentrator --json`` prints."""
        return {
            "protocol": "gdw1376",
            "address": self.address.key,
            "connect" if not self.spec.listen else "listen": f"{self.spec.host}:{self.bound_port}",
            "ports": self.spec.ports,
            "meters": [
                {"pn": r.pn, "serial": r.serial, "address": r.address, "port": r.port}
                for r in sorted(self.pool.archive.values(), key=lambda r: r.pn)
            ],
            "total_groups": [
                {"number": g.number, "members": [m.pn for m in g.members]}
                for g in self.groups.configuration()
            ],
        }

    # -- link -----------------------------------------------------------------------------------

    async def _dial_loop(self) -> None:
        while True:
            await self._power_back.wait()
            try:
                reader, writer = await asyncio.open_connection(self.spec.host, self.spec.port)
            except OSError:
                self.counts["dial_failures"] += 1
                await asyncio.sleep(self.spec.redial_s)
                continue
            self.counts["connections"] += 1
            self._writer = writer
            try:
                await self._session(reader, writer)
            except (ConnectionError, OSError):
                pass
            finally:
                self._close()
            self.counts["redials"] += 1
            await asyncio.sleep(self.spec.redial_s)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Listen mode: a master connected; it replaces any older connection."""
        if not self._power_back.is_set():
            writer.transport.abort()
            return
        self._close()
        self.counts["connections"] += 1
        self._writer = writer
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # a stop cancels the session: end it quietly (the server's callback reads the result)
        finally:
            self._sessions.discard(task)
            if self._writer is writer:
                self._close()
            else:
                writer.transport.abort()

    def _close(self) -> None:
        self.logged_in.clear()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: asyncio.Queue[Frame] = asyncio.Queue()
        helpers = [
            asyncio.create_task(self._login_then_heartbeat()),
            asyncio.create_task(self._serve(requests)),
        ]
        deframer = Deframer()
        try:
            while chunk := await reader.read(4096):
                for raw in deframer.feed(chunk):
                    self._received(raw, requests)
        finally:
            for task in helpers:
                task.cancel()
            # their ends (cancelled, or a dropped connection) are results here; a stop that cancels
            # this session while it waits for them still ends it (suppressing CancelledError around
            # each await swallowed that cancellation, and the dial loop redialled forever)
            await asyncio.gather(*helpers, return_exceptions=True)

    def _received(self, raw: bytes, requests: asyncio.Queue[Frame]) -> None:
        try:
            frame = decode(raw)
        except GDW1376Error:
            self.counts["bad_frames"] += 1
            return
        if frame.up or frame.address.key != self.address.key:
            self.counts["not_for_us"] += 1
            return
        if frame.afn == Afn.CONFIRM and not frame.control.prm:
            future = self._pending.pop(frame.seq.seq, None)
            if future is not None and not future.done():
                future.set_result(any(fn in (ALL_CONFIRMED, PER_UNIT) for _pn, fn, _v in frame.items()))
            return
        requests.put_nowait(frame)

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionResetError("not connected")
        self._writer.write(data)
        await self._writer.drain()

    async def _active(self, fn: int, timeout: float) -> bool:
        """Send a login / heartbeat and wait for the master's AFN 00 confirmation."""
        seq = next(self._pseq) & 0x0F
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        await self._send(link_test(self.address, seq, fn))
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation of this task
            # that arrives as the confirmation does (a stop while the connection closes), and the
            # task then ignores every later cancel
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return False
        finally:
            self._pending.pop(seq, None)

    async def _login(self) -> bool:
        for _ in range(self.spec.login_attempts):
            self.counts["logins"] += 1
            if await self._active(LOGIN, self.spec.login_timeout_s):
                self.logged_in.set()
                return True
        self.counts["login_failures"] += 1
        return False

    async def _login_then_heartbeat(self) -> None:
        if not await self._login():
            self._close()
            return
        missed = 0
        while True:
            await asyncio.sleep(self.spec.heartbeat_s)
            self.counts["heartbeats"] += 1
            missed = 0 if await self._active(HEARTBEAT, self.spec.login_timeout_s) else missed + 1
            if missed >= UNCONFIRMED_HEARTBEATS_LIMIT:
                self.counts["heartbeat_failures"] += 1
                self._close()
                return

    # -- scheduled faults -----------------------------------------------------------------------

    async def _at(self, at: float, action: Any, kind: str) -> None:
        await asyncio.sleep(at)
        self.faults.counts[kind] += 1
        await action()

    async def _drop(self) -> None:
        self._close()

    async def _relogin(self) -> None:
        if self._writer is not None:
            await self._login()

    async def _alarm(self, index: int, at: float, duration: float, kind: str) -> None:
        """Meter ``index``'s condition ``kind`` from ``at`` for ``duration`` s: two ERC records."""
        await asyncio.sleep(at)
        self.faults.counts["alarm"] += 1
        pn = index + 1  # the archive's Pn of meter ``index``
        for started in (True, False):
            erc, data = alarm_record(
                kind, pn, self.clock.local().replace(second=0, microsecond=0), started=started
            )
            self.events.append(RawEvent(erc, data))
            if started:
                await asyncio.sleep(duration)

    async def _power_cut(self, duration: float) -> None:
        off = self.clock.local().replace(second=0)
        self._power_back.clear()
        self._close()
        for meter in self.pool.meters:
            meter.model.power_off()
        await asyncio.sleep(duration)
        for meter in self.pool.meters:
            meter.model.power_on()
        self.events.append(PowerEvent(off, self.clock.local().replace(second=0)))
        self._power_back.set()

    async def _collect_loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.collect_period_s)
            self.pool.collect()

    # -- requests -------------------------------------------------------------------------------

    async def _serve(self, requests: asyncio.Queue[Frame]) -> None:
        await self.logged_in.wait()
        while True:
            request = await requests.get()
            self.counts[f"afn_{request.afn:02X}"] += 1
            try:
                replies = await self._answer(request)
            except GDW1376Error:  # a value this concentrator cannot put in a frame
                self.counts["answer_errors"] += 1
                replies = self._deny(request)
            fault = self.faults.reply_fault(self.requests_served, self.spec.seed + 7)
            self.requests_served += 1
            if fault == "lost":
                continue
            delay = self.spec.latency_ms / 1000 + (self.faults.late_delay_s if fault == "late" else 0.0)
            await asyncio.sleep(delay)
            for reply in replies:
                await self._send(reply)

    @property
    def _unread_events(self) -> tuple[int, int] | None:
        if self.events_read >= len(self.events):
            return None
        return (len(self.events) % EVENT_RING, 0)

    def _deny(self, request: Frame) -> list[bytes]:
        self.counts["denials"] += 1
        return [confirm(request.address, request.seq.seq, ALL_DENIED, up=True)]

    async def _answer(self, request: Frame) -> list[bytes]:
        afn = request.afn
        if self.spec.pw is not None and request.pw is not None and request.pw != self.spec.pw:
            return self._deny(request)
        if afn in (Afn.SET_PARAMETERS, Afn.CONTROL):
            if not self._apply(request):
                return self._deny(request)
            return [confirm(request.address, request.seq.seq, ALL_CONFIRMED, up=True)]
        if afn == Afn.FORWARD:
            forwarded = [await self._forward(value) for _pn, fn, value in request.items() if fn == 1]
            units = [u for u in forwarded if u is not None]
        else:
            units = self._read(request)
        if not units:
            return self._deny(request)
        return response_frames(
            request,
            units,
            events=self._unread_events,
            max_user_data=self.spec.max_frame_bytes,
        )

    def _apply(self, request: Frame) -> bool:
        """AFN 04 F10 (archive), AFN 04 F14 (total groups) and AFN 05 F31 (clock); False for anything
        else (or a group number out of range)."""
        items = list(request.items())
        if not items:
            return False
        for _pn, fn, value in items:
            if request.afn == Afn.SET_PARAMETERS and fn == 10 and isinstance(value, tuple):
                self.pool.store_archive(value)
            elif request.afn == Afn.SET_PARAMETERS and fn == TOTAL_GROUPS_FN and isinstance(value, tuple):
                try:
                    self.groups.store(value)
                except ValueError:
                    return False
            elif request.afn == Afn.CONTROL and fn == 31:
                self.clock.set_local(value)
            else:
                return False
        return True

    def _read(self, request: Frame) -> list[Unit]:
        """Answer units for the Pn that have data (Pn without a meter are left out)."""
        units: list[Unit] = []
        for u in request.units:
            pns = self._expand(u.pns)
            requested = dict(zip(itertools.product(u.pns, u.fns), u.values, strict=False))
            answered: list[tuple[int, list[Any]]] = []
            for pn in pns:
                values = [
                    self._value(request.afn, pn, fn, requested.get((pn, fn), requested.get((ALL_POINTS, fn))))
                    for fn in u.fns
                ]
                if all(v is not None for v in values):
                    answered.append((pn, values))
            for _group, members in itertools.groupby(answered, key=lambda item: (item[0] - 1) // 8):
                chunk = list(members)
                units.append(
                    Unit(tuple(pn for pn, _ in chunk), u.fns, tuple(v for _, vs in chunk for v in vs))
                )
        return units

    def _expand(self, pns: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.pool.archived_pns()) if pns == (ALL_POINTS,) else pns

    def _value(self, afn: int, pn: int, fn: int, asked: Any) -> Any:
        if afn == Afn.CLASS1_DATA:
            if fn == 2 and pn == 0:
                return self.clock.local()
            if fn == 129:
                return self.pool.current(pn)
            if fn == SNAPSHOT_FN:
                return self.pool.snapshot(pn)
        elif afn == Afn.CLASS2_DATA:
            if fn == 161 and asked is not None:
                return self.pool.daily(pn, asked)
            if fn in GROUP_CURVE_FNS and isinstance(asked, CurveRequest):  # Pn = a group number
                self.counts[f"curve_F{fn}"] += 1
                return self.groups.curve(pn, fn, asked, self.pool.profile_of)
            if fn in CURVE_FNS and isinstance(asked, CurveRequest):
                self.counts[f"curve_F{fn}"] += 1
                return self.pool.curve(pn, fn, asked)
        elif afn == Afn.QUERY_PARAMETERS and fn == 10 and isinstance(asked, ArchiveQuery):
            return tuple(self.pool.archive[s] for s in asked.serials if s in self.pool.archive)
        elif afn == Afn.QUERY_PARAMETERS and fn == TOTAL_GROUPS_FN and pn == 0:
            return self.groups.configuration()
        elif afn == Afn.CLASS3_DATA and fn == 1 and isinstance(asked, EventRequest):
            return self._event_records(asked)
        elif afn == Afn.CLASS3_DATA and fn == 2 and isinstance(asked, EventRequest):
            return EventRecords(len(self.events) % EVENT_RING, 0, asked.start, asked.start, ())
        return None

    def _event_records(self, asked: EventRequest) -> EventRecords:
        count = (asked.end - asked.start) % EVENT_RING
        available = [(i % EVENT_RING, e) for i, e in enumerate(self.events)][-EVENT_RING:]
        chosen = [e for pointer, e in available if (pointer - asked.start) % EVENT_RING < count]
        end = (asked.start + len(chosen)) % EVENT_RING
        if chosen and end == len(self.events) % EVENT_RING:
            self.events_read = len(self.events)
        return EventRecords(len(self.events) % EVENT_RING, 0, asked.start, end, tuple(chosen))

    async def _forward(self, request: Any) -> Unit | None:
        """AFN 10 F1: put the DL/T 645 frame on the port, wait for the meter, return its answer."""
        if not isinstance(request, ForwardRequest):
            return None
        self.counts["forwards"] += 1
        responder = self.pool.responders.get(request.port)
        char_time = bits_per_char(request.line_format) / request.baud if self.spec.line_timing else 0.0
        await asyncio.sleep(len(request.content) * char_time)
        timeout = request.frame_timeout.ms / 1000
        understood = request.baud == self.spec.baud and request.line_format == METER_LINE_FORMAT
        if not understood:
            self.counts["forward_line_mismatch"] += 1
        replies = responder.handle(request.content) if responder is not None and understood else []
        if replies:
            reply = replies[0]
            took = reply.delay + len(reply.data) * char_time
            if took <= timeout:
                await asyncio.sleep(took)
                return Unit((0,), (1,), (ForwardReply(request.port, reply.data),))
        self.counts["forward_timeouts"] += 1
        await asyncio.sleep(timeout)
        return Unit((0,), (1,), (ForwardReply(request.port, b""),))
