"""DL/T 645 meters behind a Q/GDW 1376.1 concentrator: the same driver interface as a meter on a bus.

What the concentrator collects itself is read natively, several Pn per request: AFN 0C F129 (forward
active energy now, total + tariffs), AFN 0C F25 (power, power factor, voltage and current now:
:data:`SNAPSHOT_QUANTITIES`) and, for backfill, AFN 0D F161 (the midnight freeze, per missed
day) and the curves of a day in one multi-unit request (:data:`PROFILE_CURVES`: forward active
energy F101, the energy quantity of each interval F97..F100, active and reactive power F81..F88,
voltage and current F89..F95, power factor F105..F108; 15-minute points become the meter's interval
quantities ``power_kw``, ``voltage_a_v``, ``current_n_a``, ``pf``, ``energy_import_interval_kwh``
..., see ``protocols.gdw1376.CURVE_KINDS``). :class:`PointBatch` asks for
every registered meter of the concentrator at once and hands each meter its value once; a value
older than ``max_age`` (the concentrator has not collected lately) or all-EE (never collected) is
read from the meter instead. Everything else (other quantities and DIs, the meter's clock, its
events, relay commands with their read-back) is the DL/T 645 driver's own frames carried by AFN 10 F1
(:class:`ForwardBus`): replies are matched by the forwarded frame's address and DI, never by order.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from headend.drivers.base import (
    Capabilities,
    EventRecord,
    MeterRefused,
    NotSupported,
    ProfileRecord,
    RelayState,
    SwitchResult,
)
from headend.drivers.dlt645 import Dlt645Driver
from headend.secrets import Credentials
from headend.transport.bus import LineStats
from headend.transport.channel import ExchangeTimeout, Framer
from headend.transport.concentrator import ConcentratorDenied, ConcentratorLink, ConcentratorTimeout
from headend.transport.url import ChannelConfig
from headend.vocabulary import SwitchOperation
from protocols.gdw1376 import (
    CURVE_KINDS,
    Afn,
    Curve,
    CurveRequest,
    DailyReading,
    EnergyReading,
    ForwardReply,
    ForwardRequest,
    PhaseSnapshot,
    Timeout,
    Unit,
    unit,
)

TARIFF_QUANTITIES = (
    "energy_import_t1_kwh",
    "energy_import_t2_kwh",
    "energy_import_t3_kwh",
    "energy_import_t4_kwh",
)
NATIVE_QUANTITIES = ("energy_import_kwh", *TARIFF_QUANTITIES)
SNAPSHOT_QUANTITIES = (  # AFN 0C F25: one record per Pn instead of 4-5 forwarded DL/T 645 reads
    "power_kw",
    "power_a_kw",
    "power_b_kw",
    "power_c_kw",
    "reactive_power_kvar",
    "reactive_power_a_kvar",
    "reactive_power_b_kvar",
    "reactive_power_c_kvar",
    "pf",
    "pf_a",
    "pf_b",
    "pf_c",
    "voltage_a_v",
    "voltage_b_v",
    "voltage_c_v",
    "current_a_a",
    "current_b_a",
    "current_c_a",
    "current_n_a",
)
POINTS_PER_REQUEST = 32  # Pn per batched request (4 DA groups): one answer of 1-2 frames
BATCH_TTL_S = 120.0  # a batched value not taken by its meter within this time is asked again
PROFILE_CURVES = (  # one unit per DT group: the curves one backfill request asks for
    (81, 82, 83, 84, 85, 86, 87, 88),
    (89, 90, 91, 92, 93, 94, 95),
    (97, 98, 99, 100, 101),
    (105, 106, 107, 108),
)
METER_CURVE_QUANTITIES = {  # Fn -> the meter quantity of its points and their factor
    fn: (kind.quantity, kind.factor) for fn, kind in CURVE_KINDS.items() if kind.quantity is not None
}
CURVE_DENSITY = 1  # 15-minute points
CURVE_STEP = timedelta(minutes=15)
CURVE_POINTS = 96  # one day per request
METER_ANSWER_S = 0.5  # a DL/T 645 meter's answer allowance behind the concentrator
FORWARD_BITS = 11  # 8E1: start + 8 data + parity + stop


def curve_groups(quantities: Sequence[str] | None) -> tuple[tuple[int, ...], ...]:
    """The :data:`PROFILE_CURVES` that give ``quantities`` (all of them for None)."""
    if quantities is None:
        return PROFILE_CURVES
    wanted = set(quantities)
    groups = (tuple(fn for fn in group if CURVE_KINDS[fn].quantity in wanted) for group in PROFILE_CURVES)
    return tuple(group for group in groups if group)


def snapshot_values(snapshot: PhaseSnapshot) -> dict[str, float]:
    """The canonical quantities of an F25 record (EE fields left out; power factor as a fraction)."""
    pf = tuple(
        None if v is None else round(v / 100, 4)
        for v in (snapshot.power_factor, *snapshot.power_factor_phase)
    )
    fields = (
        snapshot.active_kw,
        *snapshot.active_phase_kw,
        snapshot.reactive_kvar,
        *snapshot.reactive_phase_kvar,
        *pf,
        *snapshot.voltage_v,
        *snapshot.current_a,
        snapshot.zero_sequence_a,
    )
    return {q: float(v) for q, v in zip(SNAPSHOT_QUANTITIES, fields, strict=True) if v is not None}


def energy_values(reading: EnergyReading) -> dict[str, float]:
    """The canonical quantities of an F129 / F161 reading (EE fields left out)."""
    values: dict[str, float] = {}
    if reading.total is not None:
        values["energy_import_kwh"] = float(reading.total)
    for name, value in zip(TARIFF_QUANTITIES, reading.tariffs, strict=False):
        if value is not None:
            values[name] = float(value)
    return values


class PointBatch:
    """Batched native reads of one concentrator's registered Pn (see the module docstring)."""

    def __init__(self, link: ConcentratorLink) -> None:
        self.link = link
        self.points: set[int] = set()
        self.requests = 0
        # (fn, day) -> pn -> (when fetched, value or None when the answer left the Pn out)
        self._cache: dict[tuple[int, date | None], dict[int, tuple[float, Any]]] = {}

    def register(self, pn: int) -> None:
        self.points.add(pn)

    async def current(self, pn: int) -> EnergyReading | None:
        """AFN 0C F129 of ``pn`` (None: the concentrator has no such Pn)."""
        value = await self._get((129, None), pn, lambda pns: _units(pns, 129))
        return value if isinstance(value, EnergyReading) else None

    async def snapshot(self, pn: int) -> PhaseSnapshot | None:
        """AFN 0C F25 of ``pn`` (None: the concentrator has no such Pn)."""
        value = await self._get((25, None), pn, lambda pns: _units(pns, 25))
        return value if isinstance(value, PhaseSnapshot) else None

    async def daily(self, pn: int, day: date) -> EnergyReading | None:
        """AFN 0D F161 of ``pn`` for ``day`` (None: no such Pn)."""
        value = await self._get((161, day), pn, lambda pns: _units(pns, 161, day))
        return value.reading if isinstance(value, DailyReading) else None

    async def _get(
        self, key: tuple[int, date | None], pn: int, build: Callable[[list[int]], list[Unit]]
    ) -> Any:
        cached = self._cache.get(key, {}).pop(pn, None)
        if cached is not None and time.monotonic() - cached[0] < BATCH_TTL_S:
            return cached[1]
        self.points.add(pn)
        ordered = sorted(self.points)
        start = ordered.index(pn)
        chunk = ordered[start : start + POINTS_PER_REQUEST]
        self.requests += 1
        afn = Afn.CLASS1_DATA if key[1] is None else Afn.CLASS2_DATA  # now (0C) or a day's (0D)
        try:
            items = await self.link.values(afn, build(chunk))
        except ConcentratorDenied:
            items = []  # none of these Pn is known to the concentrator
        now = time.monotonic()
        self._prune(now)
        answered = {p: value for p, fn, value in items if fn == key[0]}
        entries = self._cache.setdefault(key, {})
        for p in chunk:
            entries[p] = (now, answered.get(p))
        return entries.pop(pn)[1]

    def _prune(self, now: float) -> None:
        """Forget values no meter took in time (e.g. of a meter removed from the inventory)."""
        for key in list(self._cache):
            fresh = {p: e for p, e in self._cache[key].items() if now - e[0] < BATCH_TTL_S}
            if fresh:
                self._cache[key] = fresh
            else:
                del self._cache[key]


def _units(pns: list[int], fn: int, day: date | None = None) -> list[Unit]:
    """One unit per DA group of 8 Pn; F161 carries the day for each Pn."""
    units = []
    for group in sorted({(p - 1) // 8 for p in pns}):
        members = tuple(p for p in pns if (p - 1) // 8 == group)
        values = (day,) * len(members) if day is not None else ()
        units.append(unit(members, fn, *values))
    return units


_batches: weakref.WeakKeyDictionary[ConcentratorLink, PointBatch] = weakref.WeakKeyDictionary()


def batch_of(link: ConcentratorLink) -> PointBatch:
    """The one PointBatch of a link."""
    batch = _batches.get(link)
    if batch is None:
        batch = _batches[link] = PointBatch(link)
    return batch


class ForwardBus:
    """A meter port of a concentrator as a DL/T 645 bus: each exchange is one AFN 10 F1 forward."""

    def __init__(
        self, link: ConcentratorLink, port: int, *, baud: int | None = None, retries: int = 1
    ) -> None:
        self.link = link
        self.port = port
        self.baud = baud or link.config.baud
        self.retries = retries
        self.forwards = 0
        self.silent = 0  # forwards the meter did not answer (empty content)

    @property
    def label(self) -> str:
        return f"{self.link.label} port {self.port}"

    @property
    def config(self) -> ChannelConfig:
        return self.link.config

    @property
    def stats(self) -> LineStats:
        return self.link.stats

    async def open(self) -> None:
        """The concentrator's link opens and closes with its channel worker, not per meter port."""

    async def close(self) -> None:
        """See :meth:`open`."""

    def _forward(self, request: bytes, reply_size: int, answer_s: float) -> tuple[ForwardRequest, float]:
        line_s = (len(request) + reply_size) * FORWARD_BITS / self.baud
        frame_timeout = Timeout.of_ms(int((answer_s + 1.2 * line_s) * 1000) + 100)
        forward = ForwardRequest(
            port=self.port, content=request, baud=self.baud, frame_timeout=frame_timeout, byte_timeout_ms=100
        )
        return forward, frame_timeout.ms / 1000 + len(request) * FORWARD_BITS / self.baud

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
        """Forward ``request`` and return the first frame of the meter's reply ``accept`` takes
        (every forward carries the concentrator's PW: the link sends none to an unverified login,
        whatever ``secret`` says; ``once``: one forward, which the link does not repeat either)."""
        forward, extra_s = self._forward(request, reply_size, turnaround_s or METER_ANSWER_S)
        tries = 1 if once else 1 + (self.retries if retries is None else retries)
        link_retries = 0 if once else None
        for _ in range(tries):
            started = time.monotonic()
            self.forwards += 1
            try:
                items = await self.link.values(
                    Afn.FORWARD, [unit(0, 1, forward)], extra_s=extra_s, retries=link_retries
                )
            except ConcentratorTimeout as exc:
                raise ExchangeTimeout(exc.tries, noise=False) from None
            except ConcentratorDenied as exc:
                raise MeterRefused([f"forwarding refused by the concentrator ({exc})"]) from None
            framer.reset()
            for _pn, _fn, reply in items:
                if not isinstance(reply, ForwardReply) or reply.port != self.port:
                    continue
                if not reply.content:
                    self.silent += 1
                for frame in framer.feed(reply.content):
                    if accept(frame):
                        return frame, time.monotonic() - started
        raise ExchangeTimeout(tries, noise=framer.noise_bytes > 0 or framer.checksum_errors > 0)

    async def send_only(self, request: bytes) -> None:
        """Forward a frame that gets no reply (a broadcast); the concentrator answers after its timeout."""
        forward, extra_s = self._forward(request, 0, 0.0)
        await self.link.values(Afn.FORWARD, [unit(0, 1, forward)], extra_s=extra_s, retries=0)


async def read_curves(
    link: ConcentratorLink,
    pn: int,
    start: datetime,
    end: datetime,
    groups: tuple[tuple[int, ...], ...],
    quantities: dict[int, tuple[str, float]],
) -> dict[datetime, dict[str, float]]:
    """The 15-minute points in [start, end] of the AFN 0D curves ``groups`` (Fn of one DT group each)
    of ``pn``, by UTC time, as ``quantities`` (Fn -> name, factor; no-data points left out); one
    multi-unit request per day."""
    local = link.to_local(start)
    step_s = CURVE_STEP.total_seconds()
    offset = (local - datetime.min).total_seconds() % step_s
    cursor = local + timedelta(seconds=step_s - offset) if offset else local
    last = link.to_local(end)
    points: dict[datetime, dict[str, float]] = {}
    while cursor <= last:
        count = min(CURVE_POINTS, int((last - cursor) / CURVE_STEP) + 1)
        asked = CurveRequest(cursor, CURVE_DENSITY, count)
        units = [unit(pn, fns, *(asked,) * len(fns)) for fns in groups]
        for _pn, fn, curve in await link.values(Afn.CLASS2_DATA, units):
            named = quantities.get(fn)
            if not isinstance(curve, Curve) or named is None:
                continue
            first = link.to_utc(curve.start)
            if first is None:
                continue
            quantity, factor = named
            for index, value in enumerate(curve.values):
                if value is not None:
                    scaled = value if factor == 1.0 else round(value * factor, 6)
                    points.setdefault(first + index * CURVE_STEP, {})[quantity] = scaled
        cursor += count * CURVE_STEP
    return points


class ConcentratorMeterDriver:
    """One DL/T 645 meter (measurement point ``pn`` on ``port``) behind a concentrator; without a Pn
    everything is forwarded."""

    def __init__(
        self,
        link: ConcentratorLink,
        address: str,
        *,
        pn: int | None,
        port: int,
        edition: int = 2007,
        model: str | None = None,
        credentials: Credentials | None = None,
        utc_offset: timedelta = timedelta(hours=8),
        max_age: timedelta = timedelta(minutes=15),
        **dlt645_options: float,
    ) -> None:
        """``dlt645_options`` go to the forwarded DL/T 645 driver (e.g. ``turnaround_s``)."""
        self.link = link
        self.address = address
        self.pn = pn
        self.port = port
        self.max_age = max_age
        self.bus = ForwardBus(link, port)
        self.forwarded = Dlt645Driver(
            self.bus,
            address,
            edition=edition,
            model=model,
            credentials=credentials,
            utc_offset=utc_offset,
            **dlt645_options,
        )
        self.plan = self.forwarded.plan
        self.capabilities: Capabilities = self.forwarded.capabilities
        self.utc_offset = utc_offset
        self.batch = batch_of(link)
        if pn is not None:
            self.batch.register(pn)
        self.unsupported: dict[str, str] = {}
        self.went_back: dict[str, tuple[float, float]] = {}  # no register guard here
        self.native_reads = 0
        self.fallbacks = 0  # native quantities read from the meter (stale or EE at the concentrator)

    @property
    def credentials(self) -> Credentials | None:
        return self.forwarded.credentials

    @property
    def last_rtt_s(self) -> float | None:
        return self.forwarded.last_rtt_s

    async def read(self, quantities: list[str]) -> dict[str, float]:
        """Energy (F129) and power / power factor / voltage / current (F25) from the concentrator's
        collection when fresh, the rest (and what is stale, EE or not there) forwarded. A fresh F25
        record's EE fields are what the meter does not measure (phases B and C of a single-phase
        meter): reported unsupported, not forwarded."""
        energy = [q for q in quantities if q in NATIVE_QUANTITIES]
        phases = [q for q in quantities if q in SNAPSHOT_QUANTITIES]
        forwarded = [q for q in quantities if q not in NATIVE_QUANTITIES and q not in SNAPSHOT_QUANTITIES]
        values: dict[str, float] = {}
        not_measured: dict[str, str] = {}
        pn = self.pn
        if pn is None:
            forwarded = quantities
        else:
            if energy:
                reading = await self.batch.current(pn)
                fresh = reading is not None and self._fresh(reading.read_at)
                values.update(self._native(energy, energy_values(reading) if reading and fresh else {}))
            if phases:
                snapshot = await self.batch.snapshot(pn)
                fresh = snapshot is not None and self._fresh(snapshot.read_at)
                collected = snapshot_values(snapshot) if snapshot and fresh else {}
                values.update(self._native(phases, collected))
                if collected:  # the meter answered its collection: an EE field is not measured
                    reason = "not measured by the meter (EE in the concentrator's AFN 0C F25)"
                    not_measured = {q: reason for q in phases if q not in collected}
            missing = [q for q in energy + phases if q not in values and q not in not_measured]
            if missing:
                self.fallbacks += 1
                forwarded = missing + forwarded
        self.unsupported = dict(not_measured)
        if forwarded:
            values.update(await self.forwarded.read(forwarded))
            self.unsupported.update(self.forwarded.unsupported)
        return values

    def _native(self, wanted: list[str], collected: dict[str, float]) -> dict[str, float]:
        """The ``wanted`` quantities the concentrator has (counted as a native read when any)."""
        found = {q: collected[q] for q in wanted if q in collected}
        if found:
            self.native_reads += 1
        return found

    def _fresh(self, local_read_at: datetime | None) -> bool:
        read_at = self.link.to_utc(local_read_at)
        return read_at is not None and datetime.now(UTC) - read_at <= self.max_age

    async def read_di(self, di: str, *, request: bytes | None = None) -> Any:
        return await self.forwarded.read_di(di, request=request)

    async def read_profile(
        self, start: datetime, end: datetime, quantities: Sequence[str] | None = None
    ) -> list[ProfileRecord]:
        """Midnight freezes (F161, batched per day) and 15-minute curve points (F101) in [start, end];
        the meter's own load profile (forwarded) without a Pn or if the concentrator denies the curve."""
        pn = self.pn
        if pn is None:
            return await self.forwarded.read_profile(start, end, quantities)
        records: dict[datetime, ProfileRecord] = {}
        for day, midnight in self._midnights(start, end):
            reading = await self.batch.daily(pn, day)
            values = energy_values(reading) if reading is not None else {}
            if values:
                records[midnight] = ProfileRecord(midnight, values, "daily_freeze")
        try:
            groups = curve_groups(quantities)
            for ts, values in (await self.curve_points(start, end, groups) if groups else {}).items():
                if ts in records:  # the freeze keeps its energy; the curves add their quantities
                    values = {**values, **records[ts].values}
                    records[ts] = ProfileRecord(ts, values, records[ts].source)
                else:
                    records[ts] = ProfileRecord(ts, values, "load_profile")
        except ConcentratorDenied:
            for record in await self.forwarded.read_profile(start, end, quantities):
                records.setdefault(record.ts, record)
        return sorted(records.values(), key=lambda r: r.ts)

    def _midnights(self, start: datetime, end: datetime) -> list[tuple[date, datetime]]:
        """(Td_d, the UTC instant of the freeze ending it) for each local midnight in [start, end]."""
        local = self.link.to_local(start)
        midnight = datetime.combine(local.date(), datetime.min.time())
        if midnight < local:
            midnight += timedelta(days=1)
        out = []
        last = self.link.to_local(end)
        while midnight <= last:
            utc = self.link.to_utc(midnight)
            assert utc is not None
            out.append((midnight.date() - timedelta(days=1), utc))
            midnight += timedelta(days=1)
        return out

    async def curve_points(
        self, start: datetime, end: datetime, groups: tuple[tuple[int, ...], ...] = PROFILE_CURVES
    ) -> dict[datetime, dict[str, float]]:
        """The 15-minute points of the curves ``groups`` (Fn of one DT group each) in [start, end], by
        UTC time, as the meter's quantities (no-data points left out); one request per day."""
        pn = self.pn
        if pn is None:
            raise NotSupported("curves need the meter's Pn at the concentrator")
        return await read_curves(self.link, pn, start, end, groups, METER_CURVE_QUANTITIES)

    async def read_clock(self) -> datetime:
        return await self.forwarded.read_clock()

    async def set_clock(self, *, broadcast: bool) -> None:
        """The DL/T 645 time broadcast or addressed write, forwarded (the policy is the engine's)."""
        await self.forwarded.set_clock(broadcast=broadcast)

    async def read_events(self, kinds: list[str], *, last: int = 3) -> list[EventRecord]:
        return await self.forwarded.read_events(kinds, last=last)

    async def relay_state(self) -> RelayState:
        return await self.forwarded.relay_state()

    async def switch(
        self,
        action: SwitchOperation,
        *,
        operator: str,
        confirm_timeout_s: float | None = None,
        poll_s: float | None = None,
    ) -> SwitchResult:
        """The DL/T 645 relay command forwarded, confirmed by reading status word 3 back (forwarded)."""
        return await self.forwarded.switch(
            action, operator=operator, confirm_timeout_s=confirm_timeout_s, poll_s=poll_s
        )


__all__ = [
    "ConcentratorMeterDriver",
    "ForwardBus",
    "PointBatch",
    "batch_of",
    "energy_values",
    "read_curves",
    "snapshot_values",
]
