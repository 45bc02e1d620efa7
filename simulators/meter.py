"""A protocol-independent electricity meter model.

Energy registers grow from a daily load shape with per-meter, per-interval noise (deterministic from
the seed), split into four tariff registers by the meter's time-of-use schedule at its own clock
(``simulators.tou``: two sets and the switch between them); reactive energy follows the power
factor. The meter keeps load-profile records (every 15 minutes unless configured) and daily freeze
records in memory (pre-filled at start-up, so a head-end can backfill at once), a relay
with the DL/T 645 remote control semantics, event records, a drifting clock, power-down periods and
an optional prepaid balance. All times in records are the meter's local time (naive).
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from simulators.clock import MeterClock, TimeSource
from simulators.conditions import MeterCondition
from simulators.tou import MeterTou

NOMINAL_VOLTAGE = 230.0


@functools.lru_cache(maxsize=4096)
def _load_shape(hour: float) -> float:
    """Relative load at a local hour of day: a morning and an evening peak (shared by all meters)."""
    return 0.35 + 0.5 * math.exp(-(((hour - 8) / 1.5) ** 2)) + 0.9 * math.exp(-(((hour - 19.5) / 2) ** 2))


@functools.lru_cache(maxsize=4096)
def _solar_shape(hour: float) -> float:
    """Relative rooftop generation at a local hour between 9 and 16 (shared by all meters)."""
    return math.sin(math.pi * (hour - 9) / 7)


_HOURS = tuple(timedelta(hours=hour) for hour in range(24))


class RelayRefused(Exception):
    """The meter refuses a relay action (keep-power active)."""


@dataclass(slots=True)
class Registers:
    """Cumulative energy registers (kWh / kvarh)."""

    import_tariffs: list[float] = field(default_factory=lambda: [0.0] * 5)  # index 1..4
    export_tariffs: list[float] = field(default_factory=lambda: [0.0] * 5)
    q1: float = 0.0
    q2: float = 0.0
    q3: float = 0.0
    q4: float = 0.0

    @property
    def import_kwh(self) -> float:
        return sum(self.import_tariffs[1:])

    @property
    def export_kwh(self) -> float:
        return sum(self.export_tariffs[1:])

    def snapshot(self) -> dict[str, float]:
        """Rounded register values as a meter would display them (2 decimals)."""
        return {
            "forward_active_kwh": round(self.import_kwh, 2),
            "reverse_active_kwh": round(self.export_kwh, 2),
            "q1_reactive_kvarh": round(self.q1, 2),
            "q2_reactive_kvarh": round(self.q2, 2),
            "q3_reactive_kvarh": round(self.q3, 2),
            "q4_reactive_kvarh": round(self.q4, 2),
        }


@dataclass(slots=True)
class Relay:
    """Relay state: the physical state, the commanded state, keep-power and alarm flags."""

    open: bool = False
    command_open: bool = False
    keep_power: bool = False
    alarm: bool = False
    open_at: datetime | None = None  # UTC time a delayed trip takes effect
    awaiting_button: bool = False  # close allowed, waiting for the customer


@dataclass(slots=True)
class SwitchRecord:
    """A trip or close event: local time, operator code and register snapshot."""

    time: datetime
    operator: str
    registers: dict[str, float]


@dataclass(slots=True)
class ProfileRecord:
    """A load-profile record (local interval end time)."""

    time: datetime
    import_kwh: float
    export_kwh: float
    q1: float
    q2: float
    q3: float
    q4: float
    power_kw: float
    voltage_v: float
    current_a: float
    curves: dict[str, float] = field(default_factory=dict)  # every interval quantity of the slot


@dataclass(slots=True)
class DailyFreeze:
    """A daily freeze at local midnight: import and export, total + 4 tariffs."""

    time: datetime
    import_values: list[float]
    export_values: list[float]


class SimMeter:
    """One simulated meter (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        seed: int,
        source: TimeSource,
        phases: int = 1,
        utc_offset: timedelta = timedelta(hours=8),
        clock_offset_s: float = 0.0,
        drift_ppm: float = 0.0,
        load_scale: float = 1.0,
        trip_delay_s: float = 0.0,
        prepaid_balance: float | None = None,
        price_per_kwh: float = 0.5,
        history_days: int = 7,
        freeze_days: int = 62,
        profile_period_s: int = 900,
    ) -> None:
        if profile_period_s <= 0 or profile_period_s % 60 or 86400 % profile_period_s:
            # DL/T 645 profile records carry minutes, not seconds
            raise ValueError(f"profile period {profile_period_s} s must be whole minutes dividing a day")
        self.address = address
        self.meter_number = address  # DL/T 645 04 00 04 02; a swapped-in device answers with its own
        self.seed = seed
        self.source = source
        self.phases = phases
        self.clock = MeterClock(source, utc_offset, clock_offset_s, drift_ppm)
        self.load_scale = 1.0  # history is pre-filled at the natural rate; ``load_scale`` applies from now on
        self.trip_delay = timedelta(seconds=trip_delay_s)
        self.prepaid_balance = prepaid_balance
        self.alarm_amounts = [20.0, 10.0]  # prepaid alarm amounts 1 and 2 (04 00 10 01 / 02), yuan
        self.price_per_kwh = price_per_kwh
        rng = random.Random(seed)
        self.base_kw = rng.uniform(0.2, 1.2) * (3 if phases == 3 else 1)
        self.export_kw = rng.choice((0.0, 0.0, 0.0, rng.uniform(0.5, 2.0)))
        self.pf = rng.uniform(0.92, 0.99)
        self._tan_phi = math.tan(math.acos(self.pf))  # reactive per active power
        self.registers = Registers(import_tariffs=[0.0] + [rng.uniform(100, 3000) for _ in range(4)])
        self.relay = Relay()
        self.powered = True
        self.offline = False  # communication lost (the meter still measures)
        self.condition = MeterCondition()  # stopped, reversed wiring, lost phase ... (from when it is set)
        self.trips: deque[SwitchRecord] = deque(maxlen=10)
        self.closes: deque[SwitchRecord] = deque(maxlen=10)
        self.trip_count = 0
        self.close_count = 0
        self.power_downs: deque[tuple[datetime, datetime]] = deque(maxlen=10)
        self.power_down_count = 0
        self.time_sets: deque[tuple[str, datetime, datetime]] = deque(maxlen=10)
        # other event records by kind (protocols.dlt645.events), newest first: (start, end) of a
        # condition, or (time, operator) of a programming / clear; and how many happened
        self.spans: dict[str, deque[tuple[datetime, datetime]]] = {}
        self.stamps: dict[str, deque[tuple[datetime, str]]] = {}
        self.event_counts: dict[str, int] = {}
        self.clock_battery_low = False
        self.last_broadcast_sync: date | None = None  # local day of the last broadcast accepted
        self.max_demand_kw = 0.0
        self.max_demand_time: datetime | None = None
        self.profile_period_s = profile_period_s
        self.profile: deque[ProfileRecord] = deque(maxlen=history_days * 86400 // profile_period_s)
        self.daily: deque[DailyFreeze] = deque(maxlen=freeze_days)
        self._noise = random.Random(seed ^ 0x5EED)
        self._power_down_start: datetime | None = None
        self._pending_operator = "00000000"
        self.tou = MeterTou()
        now = source.now()
        first_local_midnight = ((now + utc_offset) - timedelta(days=freeze_days)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self._t = first_local_midnight - utc_offset
        self._prefill(now, history_days)
        self.load_scale = load_scale

    # -- load model ---------------------------------------------------------------------------

    def local_hour(self, utc: datetime) -> float:
        """Local hour of day (fractional) for a UTC time, by the meter's time zone (no clock error)."""
        local = utc + self.clock.utc_offset
        return local.hour + local.minute / 60 + local.second / 3600

    def power_at(self, utc: datetime) -> float:
        """Active import power (kW) drawn in the 15-minute slot containing ``utc``, before on/off."""
        return self._power(self.local_hour(utc), utc)

    def _power(self, hour: float, utc: datetime) -> float:
        slot = int(utc.timestamp() // 900)
        noise = 0.8 + 0.4 * ((slot * 2654435761 + self.seed * 40503) % 1000) / 1000
        return self.base_kw * _load_shape(hour) * noise * self.load_scale

    def export_at(self, utc: datetime) -> float:
        """Export power (kW) from a rooftop generator, if the meter has one."""
        return self._export(self.local_hour(utc))

    def _export(self, hour: float) -> float:
        if not self.export_kw or not 9 <= hour < 16:
            return 0.0
        return self.export_kw * _solar_shape(hour) * self.load_scale

    @property
    def supplying(self) -> bool:
        """True when the customer's load is connected and the meter is powered."""
        return self.powered and not self.relay.open

    def _prefill(self, now: datetime, history_days: int) -> None:
        """Run the model from ``freeze_days`` ago: whole days first, then profile-period steps."""
        detailed_from = now - timedelta(days=history_days)
        while self._t + timedelta(days=1) <= detailed_from:
            self._integrate_day()
        self.advance(now)

    def _integrate_day(self) -> None:
        """Add one day of consumption in 24 hourly steps (history beyond the load-profile window).

        ``_add_energy`` for each hour, unrolled (the same arithmetic in the same order): most of a
        meter's start-up is spent here."""
        if self.supplying:
            reg = self.registers
            imports, exports = reg.import_tariffs, reg.export_tariffs
            offset, seed_term, scale = self.clock.utc_offset, self.seed * 40503, self.load_scale
            tariff_at, midnight = self.tou.tariff_at, self.clock.local(self._t)  # the meter's own time
            for step in _HOURS:
                start = self._t + step
                local = start + offset
                hour = local.hour + local.minute / 60 + local.second / 3600
                tariff = tariff_at(midnight + step)
                slot = int(start.timestamp() // 900)
                noise = 0.8 + 0.4 * ((slot * 2654435761 + seed_term) % 1000) / 1000
                energy = self.base_kw * _load_shape(hour) * noise * scale
                exported = self._export(hour)
                imports[tariff] += energy
                exports[tariff] += exported
                reg.q1 += energy * self._tan_phi
                reg.q4 += exported * 0.1
                if self.prepaid_balance is not None:
                    self.prepaid_balance -= energy * self.price_per_kwh
        end = self._t + timedelta(days=1)
        self._t = end
        self._maybe_freeze(end - timedelta(seconds=1), end)

    def _add_energy(self, start: datetime, hours: float) -> float:
        if not self.supplying:
            return 0.0
        hour = self.local_hour(start)
        tariff = self.tou.tariff_at(self.clock.local(start))
        energy = self._power(hour, start) * hours
        exported = self._export(hour) * hours
        if self.condition.stopped:  # the load draws current; no register (nor the demand) moves
            return 0.0
        if self.condition.reversed:  # the load's energy counts as export
            exported, energy = exported + energy, 0.0
        registered = energy * (1 - self.condition.bypass)  # a bypass: the rest is drawn around the meter
        reg = self.registers
        reg.import_tariffs[tariff] += registered
        reg.export_tariffs[tariff] += exported
        reg.q1 += registered * self._tan_phi
        reg.q4 += exported * 0.1
        if self.prepaid_balance is not None:
            self.prepaid_balance -= registered * self.price_per_kwh
        return registered

    def advance(self, now: datetime | None = None) -> None:
        """Integrate consumption up to ``now`` (UTC), recording profile and freeze records on the way."""
        now = now or self.source.now()
        while self._t < now:
            if self.relay.open_at is not None and self.relay.open_at <= self._t:
                self._apply_open(self.relay.open_at)
            period = self.profile_period_s
            slot_end = datetime.fromtimestamp((self._t.timestamp() // period + 1) * period, self._t.tzinfo)
            end = min(slot_end, now)
            if self.relay.open_at is not None and self._t < self.relay.open_at < end:
                end = self.relay.open_at
            hours = (end - self._t).total_seconds() / 3600
            energy = self._add_energy(self._t, hours)
            self._track_demand(self._t, energy, hours)
            previous, self._t = self._t, end
            if end == slot_end:
                self._record_profile(end)
                self._maybe_freeze(previous, end)

    def _track_demand(self, start: datetime, energy: float, hours: float) -> None:
        if hours >= self.profile_period_s / 3600 - 1e-9 and energy / hours > self.max_demand_kw:
            self.max_demand_kw = energy / hours
            self.max_demand_time = self.clock.local(start)

    def _record_profile(self, end: datetime) -> None:
        values = self._profile_values(end)
        reg = self.registers
        self.profile.append(
            ProfileRecord(
                time=(end + self.clock.utc_offset).replace(tzinfo=None),
                import_kwh=round(reg.import_kwh, 2),
                export_kwh=round(reg.export_kwh, 2),
                q1=round(reg.q1, 2),
                q2=round(reg.q2, 2),
                q3=round(reg.q3, 2),
                q4=round(reg.q4, 2),
                power_kw=values["power_kw"],
                voltage_v=values["voltage_a_v"],
                current_a=values["current_a_a"],
                curves=values,
            )
        )

    def _maybe_freeze(self, previous: datetime, end: datetime) -> None:
        local_end = (end + self.clock.utc_offset).replace(tzinfo=None)
        local_previous = (previous + self.clock.utc_offset).replace(tzinfo=None)
        if local_end.date() != local_previous.date() and local_end.time() == datetime.min.time():
            reg = self.registers
            self.daily.append(
                DailyFreeze(
                    time=local_end,
                    import_values=[round(reg.import_kwh, 2)] + [round(v, 2) for v in reg.import_tariffs[1:]],
                    export_values=[round(reg.export_kwh, 2)] + [round(v, 2) for v in reg.export_tariffs[1:]],
                )
            )

    def _profile_values(self, now: datetime) -> dict[str, float]:
        """What a profile record keeps of ``instantaneous`` (same values, same noise drawn): power,
        reactive power, voltage, current and power factor, per phase and total, and the
        zero-sequence (neutral) current of a three-phase meter."""
        power = self.power_at(now) if self.supplying else 0.0
        noise = self._noise
        voltages = [round(NOMINAL_VOLTAGE + noise.uniform(-3, 3), 1) for _ in range(self.phases)]
        noise.uniform(-0.05, 0.05)  # the frequency's draw
        per_phase = power / self.phases
        currents = [round(per_phase * 1000 / (v * self.pf), 3) for v in voltages]
        pf = round(self.pf if power else 1.0, 3)
        values = {
            "power_kw": round(power, 4),
            "reactive_power_kvar": round(power * self._tan_phi, 4),
            "pf": pf,
        }
        for index, label in enumerate("abc"[: self.phases]):
            values[f"voltage_{label}_v"] = voltages[index]
            values[f"current_{label}_a"] = currents[index]
            if self.phases == 3:
                values[f"power_{label}_kw"] = round(per_phase, 4)
                values[f"reactive_power_{label}_kvar"] = round(per_phase * self._tan_phi, 4)
                values[f"pf_{label}"] = pf
        if self.phases == 3:  # phasors 120 degrees apart: the residue of unequal currents
            real = currents[0] - (currents[1] + currents[2]) / 2
            imaginary = (currents[1] - currents[2]) * math.sqrt(3) / 2
            values["current_n_a"] = round(math.hypot(real, imaginary), 3)
        return self.condition.shape(values)

    def instantaneous(self, now: datetime | None = None) -> dict[str, float]:
        """Voltage, current, powers, power factor and frequency, consistent with the load."""
        now = now or self.source.now()
        power = self.power_at(now) if self.supplying else 0.0
        phases = self.phases
        voltages = [round(NOMINAL_VOLTAGE + self._noise.uniform(-3, 3), 1) for _ in range(phases)]
        per_phase = power / phases
        currents = [round(per_phase * 1000 / (v * self.pf), 3) for v in voltages]
        reactive = power * math.tan(math.acos(self.pf))
        values = {
            "power_kw": round(power, 4),
            "reactive_kvar": round(reactive, 4),
            "apparent_kva": round(power / self.pf, 4),
            "pf": round(self.pf if power else 1.0, 3),
            "frequency_hz": round(50 + self._noise.uniform(-0.05, 0.05), 2),
        }
        for index, label in enumerate("abc"[:phases]):
            values[f"voltage_{label}_v"] = voltages[index]
            values[f"current_{label}_a"] = currents[index]
            values[f"power_{label}_kw"] = round(per_phase, 4)
        return self.condition.shape(values)

    # -- relay --------------------------------------------------------------------------------

    def trip(self, operator: str) -> None:
        """Remote trip; refused while keep-power is active; honours the trip delay."""
        if self.relay.keep_power:
            raise RelayRefused("keep-power is active")
        now = self.source.now()
        self.advance(now)
        self.relay.command_open = True
        self.relay.awaiting_button = False
        self._pending_operator = operator
        if self.trip_delay:
            self.relay.open_at = now + self.trip_delay
        else:
            self._apply_open(now)

    def _apply_open(self, when: datetime) -> None:
        self.relay.open_at = None
        if not self.relay.open:
            self.relay.open = True
            self.trip_count += 1
            self.trips.appendleft(
                SwitchRecord(self.clock.local(when), self._pending_operator, self.registers.snapshot())
            )

    def close(self, operator: str, *, direct: bool) -> None:
        """Direct close closes at once; close-allowed waits for ``press_button``."""
        self.advance()
        self.relay.command_open = False
        self.relay.open_at = None
        self._pending_operator = operator
        if direct:
            self._apply_close()
        else:
            self.relay.awaiting_button = self.relay.open

    def press_button(self) -> bool:
        """The customer presses the button: closes a relay that is allowed to close."""
        if self.relay.open and self.relay.awaiting_button:
            self.advance()
            self._apply_close()
            return True
        return False

    def _apply_close(self) -> None:
        self.relay.awaiting_button = False
        if self.relay.open:
            self.relay.open = False
            self.close_count += 1
            self.closes.appendleft(
                SwitchRecord(self.clock.local(), self._pending_operator, self.registers.snapshot())
            )

    # -- power and clock ----------------------------------------------------------------------

    def power_off(self) -> None:
        """Mains lost: no consumption, no answers until ``power_on``."""
        if self.powered:
            self.advance()
            self.powered = False
            self._power_down_start = self.clock.local()

    def power_on(self) -> None:
        """Mains back: a power-down record (start, end) is stored."""
        if not self.powered:
            self.advance()
            self.powered = True
            self.power_down_count += 1
            self.power_downs.appendleft((self._power_down_start or self.clock.local(), self.clock.local()))

    def record_span(self, kind: str, start: datetime, end: datetime) -> None:
        """A condition (cover open, loss of voltage ...) that lasted from ``start`` to ``end`` (local)."""
        self.spans.setdefault(kind, deque(maxlen=10)).appendleft((start, end))
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1

    def clear(self, operator: str = "00000000") -> None:
        """A meter clear (电表清零): the energy registers (and the demand) start again from zero, with
        its record."""
        self.advance()
        self.registers = Registers()
        self.max_demand_kw, self.max_demand_time = 0.0, None
        self.record_stamp("meter_clear", operator)

    def record_stamp(self, kind: str, operator: str = "00000000") -> None:
        """A programming, meter clear or event clear now, by ``operator``."""
        self.stamps.setdefault(kind, deque(maxlen=10)).appendleft((self.clock.local(), operator))
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1

    def set_clock(self, value: datetime, operator: str = "00000000") -> None:
        """Set the local clock (a 0x14 write or time sync), with a time-set record."""
        before = self.clock.local()
        self.clock.set_local(value)
        self.time_sets.appendleft((operator, before, value))

    def state(self) -> dict[str, Any]:
        """A summary for logs and JSON output."""
        self.advance()
        return {
            "address": self.address,
            "energy_import_kwh": round(self.registers.import_kwh, 2),
            "relay_open": self.relay.open,
            "keep_power": self.relay.keep_power,
            "clock_error_s": self.clock.error().total_seconds(),
        }
