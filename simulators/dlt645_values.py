"""What a simulated DL/T 645 meter answers for each data identifier (2007 and 1997 editions).

``value_for(meter, di, edition, params)`` returns a value the codec can encode for that DI, or
raises ``NoData`` (the meter answers "no requested data" / "DI error").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from protocols.dlt645.events import EVENT_SOURCES
from simulators.faults import METER_EVENT_FAULTS
from simulators.meter import DailyFreeze, ProfileRecord, SimMeter, SwitchRecord


class NoData(Exception):
    """The meter has no such item (or no record at that occurrence)."""


REGISTER_SPAN = 1_000_000  # XXXXXX.XX registers roll over at 999999.99
Reader = Callable[[SimMeter], Any]  # a meter's current value of one data identifier


def _round(value: float, digits: int = 2) -> float:
    return round(value % REGISTER_SPAN, digits)


def _import_values(m: SimMeter) -> list[float]:
    reg = m.registers
    return [_round(reg.import_kwh)] + [_round(v) for v in reg.import_tariffs[1:]]


def _export_values(m: SimMeter) -> list[float]:
    reg = m.registers
    return [_round(reg.export_kwh)] + [_round(v) for v in reg.export_tariffs[1:]]


def _status_word_3(m: SimMeter) -> dict[str, Any]:
    relay = m.relay
    return {
        "raw": 0,
        "time_slot_table_2": m.tou.active_tables == 2,
        "time_zone_table_2": m.tou.active_seasons == 2,
        "relay_open": relay.open,
        "relay_command_open": relay.command_open,
        "pre_trip_alarm": relay.alarm,
        "keep_power": relay.keep_power,
        "prepaid_money": m.prepaid_balance is not None,
    }


def _status_word_1(m: SimMeter) -> dict[str, Any]:
    return {
        "raw": 0,
        "overdraft": m.prepaid_balance is not None and m.prepaid_balance < 0,
        "clock_battery_low": m.clock_battery_low,
    }


def _phase(m: SimMeter, key: str, phase: str) -> float:
    return m.instantaneous().get(f"{key}_{phase}_{'v' if key == 'voltage' else 'a'}", 0.0)


def _occurrence(items: Any, index: int) -> Any:
    if not 1 <= index <= len(items):
        raise NoData
    return items[index - 1]


def _switch_record(record: SwitchRecord) -> dict[str, Any]:
    return {"time": record.time, "operator": record.operator, **record.registers}


def _max_demand(m: SimMeter) -> dict[str, Any]:
    return {"demand": round(m.max_demand_kw, 4), "time": m.max_demand_time or m.clock.local()}


def _phase_energy(m: SimMeter, phase_index: int) -> float:
    return _round(m.registers.import_kwh / m.phases) if phase_index < m.phases else 0.0


def _tariff(values: Callable[[SimMeter], list[float]], tariff: int) -> Reader:
    return lambda m: values(m)[tariff]


def _phase_of(key: str, phase: str, digits: int | None = None) -> Reader:
    """One phase's voltage or current; ``digits`` rounds it (0: a whole number) as 1997 meters do."""
    if digits is None:
        return lambda m: _phase(m, key, phase)
    if digits == 0:
        return lambda m: round(_phase(m, key, phase))
    return lambda m: round(_phase(m, key, phase), digits)


def _phase_power(phase: str) -> Reader:
    return lambda m: m.instantaneous().get(f"power_{phase}_kw", 0.0)


def _phase_pf(phase: str) -> Reader:
    """A phase's power factor: the meter's on the phases it has, zero on the others."""
    return lambda m: m.instantaneous()["pf"] if phase == "a" or m.phases == 3 else 0.0


def _phase_share(share: int) -> Reader:
    """Import energy of one phase: an equal share on the phases the meter has, zero on the others."""
    return lambda m: _round(m.registers.import_kwh / m.phases if share < m.phases else 0)


def _fixed_2007() -> dict[str, Reader]:
    items: dict[str, Reader] = {
        "00000000": lambda m: _round(m.registers.import_kwh + m.registers.export_kwh),
        "00010000": lambda m: _import_values(m)[0],
        "0001FF00": _import_values,
        "00020000": lambda m: _export_values(m)[0],
        "0002FF00": _export_values,
        "00030000": lambda m: _round(m.registers.q1 + m.registers.q2),
        "00040000": lambda m: _round(m.registers.q3 + m.registers.q4),
        "00050000": lambda m: _round(m.registers.q1),
        "00060000": lambda m: _round(m.registers.q2),
        "00070000": lambda m: _round(m.registers.q3),
        "00080000": lambda m: _round(m.registers.q4),
        "01010000": lambda m: {
            "demand": round(m.max_demand_kw, 4),
            "time": m.max_demand_time or m.clock.local(),
        },
        "02030000": lambda m: m.instantaneous()["power_kw"],
        "02040000": lambda m: m.instantaneous()["reactive_kvar"],
        "02050000": lambda m: m.instantaneous()["apparent_kva"],
        "02060000": lambda m: m.instantaneous()["pf"],
        "02800002": lambda m: m.instantaneous()["frequency_hz"],
        "02800007": lambda m: 25.5,
        "02800008": lambda m: 3.62,
        "04000101": lambda m: m.clock.local().date(),
        "04000102": lambda m: m.clock.local().time(),
        "0400010C": lambda m: m.clock.local(),
        "04000401": lambda m: m.address,
        "04000402": lambda m: m.meter_number,
        "04000409": lambda m: 1200,
        "04000501": _status_word_1,
        "04000502": lambda m: {"raw": 0},
        "04000503": _status_word_3,
        "04000504": lambda m: {"raw": 0},
        "04000505": lambda m: {"raw": 0},
        "04000506": lambda m: {"raw": 0},
        "04000507": lambda m: {"raw": 0, "power_down": not m.powered},
        "03110000": lambda m: m.power_down_count,
        "03300400": lambda m: len(m.time_sets),
        "1D000001": lambda m: m.trip_count,
        "1E000001": lambda m: m.close_count,
        "00900200": lambda m: max(m.prepaid_balance or 0.0, 0.0),
        "00900201": lambda m: max(-(m.prepaid_balance or 0.0), 0.0),
        "04001001": lambda m: m.alarm_amounts[0],
        "04001002": lambda m: m.alarm_amounts[1],
    }
    for tariff in range(1, 5):
        items[f"0001{tariff:02X}00"] = _tariff(_import_values, tariff)
        items[f"0002{tariff:02X}00"] = _tariff(_export_values, tariff)
    for index, phase in enumerate("abc", start=1):
        items[f"0201{index:02X}00"] = _phase_of("voltage", phase)
        items[f"0202{index:02X}00"] = _phase_of("current", phase)
        items[f"0203{index:02X}00"] = _phase_power(phase)
        items[f"0206{index:02X}00"] = _phase_pf(phase)
    items["0201FF00"] = lambda m: [_phase(m, "voltage", p) for p in "abc"]
    items["0202FF00"] = lambda m: [_phase(m, "current", p) for p in "abc"]
    for di2, share in ((0x15, 0), (0x29, 1), (0x3D, 2)):
        items[f"00{di2:02X}0000"] = _phase_share(share)
    return items


FIXED_2007 = _fixed_2007()


def _profile_record(record: ProfileRecord, cls: int) -> dict[str, Any]:
    """One 06 record of ``cls`` (0 = all): classes 1..3 (voltage, current, power, power factor) from
    the quantities the record keeps, 0 for a phase a single-phase meter does not have."""
    values: dict[str, Any] = {"time": record.time}
    curves = record.curves
    if cls in (0, 1):
        values.update(
            voltage_a_v=record.voltage_v,
            voltage_b_v=curves.get("voltage_b_v", 0.0),
            voltage_c_v=curves.get("voltage_c_v", 0.0),
            current_a_a=record.current_a,
            current_b_a=curves.get("current_b_a", 0.0),
            current_c_a=curves.get("current_c_a", 0.0),
            frequency_hz=50.0,
        )
    if cls in (0, 2) and "reactive_power_kvar" in curves:
        for kind, total, unit in (("active", "power_kw", "kw"), ("reactive", "reactive_power_kvar", "kvar")):
            values[f"{kind}_power_total_{unit}"] = curves[total]
            for phase in "abc":
                name = f"power_{phase}_kw" if kind == "active" else f"reactive_power_{phase}_kvar"
                single = curves[total] if phase == "a" else 0.0
                values[f"{kind}_power_{phase}_{unit}"] = curves.get(name, single)
    if cls in (0, 3) and "pf" in curves:
        values["pf_total"] = curves["pf"]
        for phase in "abc":
            values[f"pf_{phase}"] = curves.get(f"pf_{phase}", curves["pf"] if phase == "a" else 0.0)
    if cls in (0, 4):
        values.update(
            energy_import_kwh=record.import_kwh,
            energy_export_kwh=record.export_kwh,
            combined_reactive_1_kvarh=round(record.q1 + record.q2, 2),
            combined_reactive_2_kvarh=round(record.q3 + record.q4, 2),
        )
    if cls == 5:
        values.update(
            reactive_q1_kvarh=record.q1,
            reactive_q2_kvarh=record.q2,
            reactive_q3_kvarh=record.q3,
            reactive_q4_kvarh=record.q4,
        )
    return values


def profile_records(
    m: SimMeter, cls: int, mode: int, count: int, start: datetime | None
) -> list[dict[str, Any]]:
    """Load-profile records for a 06 request: earliest (0), from a time (1) or latest (2)."""
    if cls not in (0, 1, 2, 3, 4, 5):
        raise NoData
    m.advance()
    records = list(m.profile)
    if mode == 0:
        chosen = records[:count]
    elif mode == 1:
        if start is None:
            raise NoData
        chosen = [r for r in records if r.time >= start][:count]
    else:
        chosen = records[-count:]
    if not chosen:
        raise NoData
    return [_profile_record(r, cls) for r in chosen]


def _daily(m: SimMeter, di1: int, index: int) -> Any:
    freeze: DailyFreeze = _occurrence(list(reversed(m.daily)), index)
    if di1 == 0x00:
        return freeze.time
    if di1 == 0x01:
        return freeze.import_values
    if di1 == 0x02:
        return freeze.export_values
    raise NoData


def _events(m: SimMeter, di3: int, di1: int, index: int) -> Any:
    records = m.trips if di3 == 0x1D else m.closes
    record = _occurrence(records, index)
    if di1 == 0xFF:
        return _switch_record(record)
    if di1 == 0x01:
        return record.time
    if di1 == 0x02:
        return record.operator
    keys = {
        3: "forward_active_kwh",
        4: "reverse_active_kwh",
        5: "q1_reactive_kvarh",
        6: "q2_reactive_kvarh",
        7: "q3_reactive_kvarh",
        8: "q4_reactive_kvarh",
    }
    if di1 in keys:
        return record.registers[keys[di1]]
    raise NoData


# record DI (without the occurrence byte) -> (event kind, what the DI holds)
_EVENT_DIS: dict[str, tuple[str, str]] = {}
for _kind, _source in EVENT_SOURCES.items():
    if _source.layout in ("span", "stamp") and _kind != "power_down":
        _EVENT_DIS[_source.record] = (_kind, _source.layout)
    elif _source.layout == "split":
        _EVENT_DIS[_source.record] = (_kind, "start")
        _EVENT_DIS[_source.end] = (_kind, "end")
_EVENT_COUNTS = {s.count_di: k for k, s in EVENT_SOURCES.items() if k in METER_EVENT_FAULTS}


def _event_record(m: SimMeter, kind: str, held: str, index: int) -> Any:
    if held == "stamp":
        time, operator = _occurrence(m.stamps.get(kind, ()), index)
        return {"time": time, "operator": operator}
    start, end = _occurrence(m.spans.get(kind, ()), index)
    if held == "span":
        return {"start": start, "end": end}
    return start if held == "start" else end


def value_2007(m: SimMeter, di: str, count: int = 1, start: datetime | None = None) -> Any:
    """The value a 2007 meter reports for ``di`` (``count``/``start``: load-profile parameters)."""
    m.advance()
    if m.tou.owns(di):
        value = m.tou.read(di)
        if value is None:
            raise NoData
        return value
    getter = FIXED_2007.get(di)
    if getter is not None:
        return getter(m)
    if di in _EVENT_COUNTS:
        return m.event_counts.get(_EVENT_COUNTS[di], 0)
    if di[:6] in _EVENT_DIS:
        kind, held = _EVENT_DIS[di[:6]]
        return _event_record(m, kind, held, int(di[6:], 16))
    di3, di2, di1, di0 = bytes.fromhex(di)
    if di3 == 0x06 and di1 == 0x00:
        return profile_records(m, di2, di0, count, start)
    if di3 == 0x05 and di2 == 0x06:
        return _daily(m, di1, di0)
    if di3 in (0x1D, 0x1E) and di2 == 0x00:
        return _events(m, di3, di1, di0)
    if di3 == 0x03 and di2 == 0x11 and di1 == 0x00:
        start_time, end_time = _occurrence(m.power_downs, di0)
        return {"start": start_time, "end": end_time}
    if di3 == 0x03 and di2 == 0x30 and di1 == 0x04:
        operator, before, after = _occurrence(m.time_sets, di0)
        return {"operator": operator, "before": before, "after": after}
    raise NoData


def _fixed_1997() -> dict[str, Reader]:
    items: dict[str, Reader] = {
        "901F": _import_values,
        "902F": _export_values,
        "9110": lambda m: _round(m.registers.q1 + m.registers.q2),
        "9120": lambda m: _round(m.registers.q3 + m.registers.q4),
        "9130": lambda m: _round(m.registers.q1),
        "9140": lambda m: _round(m.registers.q4),
        "9150": lambda m: _round(m.registers.q2),
        "9160": lambda m: _round(m.registers.q3),
        "A010": lambda m: round(m.max_demand_kw, 4),
        "B010": lambda m: (m.max_demand_time or m.clock.local()).strftime("%m-%d %H:%M"),
        "B630": lambda m: m.instantaneous()["power_kw"],
        "B640": lambda m: round(m.instantaneous()["reactive_kvar"], 2),
        "B650": lambda m: m.instantaneous()["pf"],
        "C010": lambda m: m.clock.local().date(),
        "C011": lambda m: m.clock.local().time(),
        "C030": lambda m: 1200,
        "C032": lambda m: m.address,
        "C033": lambda m: m.address,
    }
    for tariff in range(5):
        items[f"901{tariff:X}"] = _tariff(_import_values, tariff)
        items[f"902{tariff:X}"] = _tariff(_export_values, tariff)
    for index, phase in enumerate("abc", start=1):
        items[f"B61{index}"] = _phase_of("voltage", phase, digits=0)
        items[f"B62{index}"] = _phase_of("current", phase, digits=2)
        items[f"B63{index}"] = _phase_power(phase)
        items[f"B65{index}"] = lambda m: m.instantaneous()["pf"]
    items["B61F"] = lambda m: [round(_phase(m, "voltage", p)) for p in "abc"]
    items["B62F"] = lambda m: [round(_phase(m, "current", p), 2) for p in "abc"]
    return items


FIXED_1997 = _fixed_1997()


def value_1997(m: SimMeter, di: str) -> Any:
    """The value a 1997 meter reports for ``di``."""
    m.advance()
    getter = FIXED_1997.get(di)
    if getter is None:
        raise NoData
    return getter(m)
