"""The meters behind a simulated concentrator: their ports, the archive, and the data it collected.

Meters are the bus simulator's DL/T 645 meters (``SimMeter`` models behind a ``Dlt645Responder``
per port; addresses from the seed, level-02 password ``HEADEND_SIM_PASSWORD`` or the simulator
default). The concentrator collects them itself over DL/T 645 (a block read of 0001FF00 through the
port's responder) for AFN 0C F129; daily freezes (AFN 0D F161) and the curves (energy F101..F104
and each interval's increase of them F97..F100, the point at an interval's end; power, voltage,
current and power factor F81..F95, F105..F108, from the quantities each load-profile record keeps;
EE where the meter does not measure one, e.g. phase B of a single-phase meter) come from each
meter's own freeze and load-profile records, so past days are deterministic from the seed.
AFN 0C F25 is the meter's instantaneous values now.

Daily freeze convention: Td_d = D is the meter's freeze taken at local 00:00 that ends day D
(i.e. 00:00 of D + 1), read by the concentrator a few minutes later (verify against a vendor).
"""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass, field
from datetime import timedelta

from protocols import dlt645
from protocols.gdw1376 import (
    CURVE_KINDS,
    ArchiveRecord,
    Curve,
    CurveRequest,
    DailyReading,
    EnergyReading,
    PayloadError,
    PhaseSnapshot,
)
from simulators.bus import DEFAULT_PASSWORD, meter_addresses
from simulators.clock import MeterClock, TimeSource
from simulators.dlt645_server import Dlt645Meter, Dlt645Responder, Reply
from simulators.meter import ProfileRecord, SimMeter

ENERGY_BLOCK = "0001FF00"  # forward active energy, total and tariffs
CURVE_FIELDS = {101: ("import_kwh",), 102: ("q1", "q2"), 103: ("export_kwh",), 104: ("q3", "q4")}
QUANTITY_OF_READING = {97: 101, 98: 102, 99: 103, 100: 104}  # interval energy = reading difference


@dataclass(slots=True)
class MeterSetup:
    """How the meters behind one concentrator are made."""

    count: int = 32
    ports: int = 2
    seed: int = 1
    baud: int = 2400
    tariffs: int = 4
    turnaround_s: float = 0.05
    utc_offset_h: float = 8.0
    history_days: int = 7
    ee_meters: set[int] = field(default_factory=set)  # never collected
    absent_meters: set[int] = field(default_factory=set)  # not in the initial archive
    three_phase_meters: set[int] = field(default_factory=set)  # the others are single-phase


class MeterPool:
    """Meters on ports, the archive (serial → record) and the last collected readings."""

    def __init__(self, setup: MeterSetup, source: TimeSource, clock: MeterClock) -> None:
        self.setup = setup
        self.clock = clock
        rng = random.Random(setup.seed)
        password = os.environ.get("HEADEND_SIM_PASSWORD") or DEFAULT_PASSWORD
        self.meters: list[Dlt645Meter] = []
        self.port_of: dict[str, int] = {}
        for index, address in enumerate(meter_addresses(setup.seed, setup.count)):
            model = SimMeter(
                address,
                seed=setup.seed * 100_003 + index,
                source=source,
                utc_offset=timedelta(hours=setup.utc_offset_h),
                history_days=setup.history_days,
                phases=3 if index in setup.three_phase_meters else 1,
            )
            meter = Dlt645Meter(
                model,
                passwords={2: password},
                preamble=rng.choice((0, 2, 4)),
                turnaround_s=setup.turnaround_s,
            )
            meter.tariffs = setup.tariffs
            self.meters.append(meter)
            self.port_of[address] = index % setup.ports + 1
        self.responders = {
            port: Dlt645Responder(
                [m for m in self.meters if self.port_of[m.address] == port], seed=setup.seed
            )
            for port in range(1, setup.ports + 1)
        }
        self.never_collected = {self.meters[i].address for i in setup.ee_meters if i < len(self.meters)}
        self.archive: dict[int, ArchiveRecord] = {}
        for index, meter in enumerate(self.meters):
            if index not in setup.absent_meters:
                self.archive[index + 1] = ArchiveRecord(
                    serial=index + 1,
                    pn=index + 1,
                    port=self.port_of[meter.address],
                    address=meter.address,
                    baud=setup.baud,
                    tariffs=setup.tariffs,
                )
        self.collected: dict[str, EnergyReading] = {}

    # -- archive ---------------------------------------------------------------------------------

    def store_archive(self, records: tuple[ArchiveRecord, ...]) -> None:
        """AFN 04 F10: add or replace records by serial; a record with Pn 0 deletes its serial."""
        for record in records:
            if record.pn == 0:
                self.archive.pop(record.serial, None)
            else:
                self.archive[record.serial] = record

    def record_of(self, pn: int) -> ArchiveRecord | None:
        """The archive record of measurement point ``pn`` (None if no meter has that Pn)."""
        return next((r for r in self.archive.values() if r.pn == pn), None)

    def archived_pns(self) -> list[int]:
        return sorted(r.pn for r in self.archive.values())

    # -- collection ------------------------------------------------------------------------------

    def collect(self) -> int:
        """Read every archived meter over DL/T 645 (its port's responder); returns meters read."""
        read = 0
        now = self.clock.local().replace(second=0)
        for record in list(self.archive.values()):
            responder = self.responders.get(record.port)
            if responder is None or record.address in self.never_collected:
                continue
            replies = responder.handle(dlt645.build_read(record.address, ENERGY_BLOCK))
            values = _block_values(replies)
            if values is not None:
                self.collected[record.address] = EnergyReading(now, values[0], tuple(values[1:]))
                read += 1
        return read

    def no_data(self) -> EnergyReading:
        return EnergyReading(None, None, (None,) * self.setup.tariffs)

    def current(self, pn: int) -> EnergyReading | None:
        """AFN 0C F129 of ``pn``: the last collected reading, all-EE if never collected, None if no Pn."""
        record = self.record_of(pn)
        if record is None:
            return None
        return self.collected.get(record.address) or self.no_data()

    def snapshot(self, pn: int) -> PhaseSnapshot | None:
        """AFN 0C F25 of ``pn``: the meter's power, power factor, voltage and current now (EE for
        what it does not measure, e.g. phases B and C of a single-phase meter)."""
        found = self._model(pn)
        if found is None:
            return None
        _record, model = found
        now = model.instantaneous() if model is not None else {}

        def phases(name: str, scale: float = 1.0) -> Triple:
            a, b, c = (now.get(name.format(x)) for x in "abc")
            return _scaled(a, scale), _scaled(b, scale), _scaled(c, scale)

        three = model is not None and model.phases == 3
        shares: Triple = (1 / 3, 1 / 3, 1 / 3) if three else (1.0, None, None)
        pf = _scaled(now.get("pf"), 100)
        return PhaseSnapshot(
            read_at=model.clock.local().replace(second=0, microsecond=0) if model is not None else None,
            active_kw=now.get("power_kw"),
            active_phase_kw=phases("power_{}_kw"),
            reactive_kvar=now.get("reactive_kvar"),
            reactive_phase_kvar=_times(shares, now.get("reactive_kvar")),
            power_factor=pf,
            power_factor_phase=(pf, pf if three else None, pf if three else None),
            voltage_v=phases("voltage_{}_v"),
            current_a=phases("current_{}_a"),
            zero_sequence_a=None,
            apparent_kva=now.get("apparent_kva"),
            apparent_phase_kva=_times(shares, now.get("apparent_kva")),
        )

    def _model(self, pn: int) -> tuple[ArchiveRecord, SimMeter | None] | None:
        record = self.record_of(pn)
        if record is None:
            return None
        meter = next((m for m in self.meters if m.address == record.address), None)
        if meter is None or record.address in self.never_collected:
            return record, None
        meter.model.advance()
        return record, meter.model

    def daily(self, pn: int, day: dt.date) -> DailyReading | None:
        """AFN 0D F161 of ``pn`` for ``day`` (all-EE when the meter has no such freeze)."""
        found = self._model(pn)
        if found is None:
            return None
        record, model = found
        if model is not None:
            midnight = dt.datetime.combine(day + timedelta(days=1), dt.time())
            freeze = next((f for f in model.daily if f.time == midnight), None)
            if freeze is not None:
                values = freeze.import_values[: 1 + self.setup.tariffs]
                read_at = midnight + timedelta(minutes=5 + record.pn % 30)
                return DailyReading(day, EnergyReading(read_at, values[0], tuple(values[1:])))
        return DailyReading(day, self.no_data())

    def profile_of(self, pn: int) -> dict[dt.datetime, ProfileRecord] | None:
        """The load-profile records of ``pn``'s meter by local time (None: no such Pn or no data)."""
        found = self._model(pn)
        if found is None or found[1] is None:
            return None
        return {r.time: r for r in found[1].profile}

    def curve(self, pn: int, fn: int, request: CurveRequest) -> Curve | None:
        """AFN 0D curve ``fn`` of ``pn``: one point per step from the meter's load profile (None = EE)."""
        found = self._model(pn)
        if found is None:
            return None
        try:
            step = request.step
        except PayloadError:
            return Curve(request.start, request.density, (None,) * request.points)
        _record, model = found
        by_time = {r.time: r for r in model.profile} if model is not None else {}
        values: list[float | None] = []
        for i in range(request.points):
            at = request.start + i * step
            if fn in QUANTITY_OF_READING:
                values.append(_interval_energy(by_time.get(at - step), by_time.get(at), fn))
            else:
                point = by_time.get(at)
                values.append(None if point is None else _curve_point(point, fn))
        return Curve(request.start, request.density, tuple(values))


Triple = tuple[float | None, float | None, float | None]


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 4)


def _times(shares: Triple, total: float | None) -> Triple:
    """``total`` split by the phase shares (None where a phase is not measured)."""
    a, b, c = (None if s is None or total is None else round(s * total, 4) for s in shares)
    return a, b, c


def _curve_point(point: ProfileRecord, fn: int) -> float | None:
    """The value of curve ``fn`` in a load-profile record (None: the meter does not measure it)."""
    if fn in CURVE_FIELDS:
        return round(sum(getattr(point, n) for n in CURVE_FIELDS[fn]), 2)
    kind = CURVE_KINDS[fn]
    if kind.quantity is None or kind.quantity not in point.curves:
        return None
    return round(point.curves[kind.quantity] / kind.factor, 4)


def _interval_energy(before: ProfileRecord | None, end: ProfileRecord | None, fn: int) -> float | None:
    """F97..F100 at an interval's end: the energy reading's increase over the interval (None: a record
    of either end missing)."""
    if before is None or end is None:
        return None
    reading = QUANTITY_OF_READING[fn]
    first, last = _curve_point(before, reading), _curve_point(end, reading)
    return None if first is None or last is None else round(last - first, 4)


def _block_values(replies: list[Reply]) -> list[float] | None:
    for reply in replies:
        try:
            frame = dlt645.decode(reply.data)
        except dlt645.DLT645Error:
            continue
        if frame.is_response and not frame.is_abnormal and isinstance(frame.value, list):
            return [float(v) for v in frame.value]
    return None
