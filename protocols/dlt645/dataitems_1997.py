"""The DL/T 645-1997 data identifier catalogue (2-byte DIs, coarser formats than 2007).

DI strings are written DI1 DI0 (e.g. ``9010``); entries are ``(name, construct format, unit)``.
"""

from __future__ import annotations

from construct import Construct, GreedyRange

from protocols.dlt645.formats import Bcd, BitWord, Digits, Timestamp

Spec = tuple[str, Construct, str | None]

ENERGY = Bcd(4, 2)
TARIFFS = {0: "total", 1: "t1", 2: "t2", 3: "t3", 4: "t4", 0xF: "block"}

# DI1 DI0 high nibble -> energy register; the low nibble of DI0 selects total/tariff/block.
ENERGY_REGISTERS: dict[str, tuple[str, str]] = {
    "901": ("forward_active_energy", "kWh"),
    "902": ("reverse_active_energy", "kWh"),
    "911": ("forward_reactive_energy", "kvarh"),
    "912": ("reverse_reactive_energy", "kvarh"),
    "913": ("q1_reactive_energy", "kvarh"),
    "914": ("q4_reactive_energy", "kvarh"),
    "915": ("q2_reactive_energy", "kvarh"),
    "916": ("q3_reactive_energy", "kvarh"),
    "941": ("last_month_forward_active_energy", "kWh"),
    "942": ("last_month_reverse_active_energy", "kWh"),
    "951": ("last_month_forward_reactive_energy", "kvarh"),
    "952": ("last_month_reverse_reactive_energy", "kvarh"),
}
DEMAND_REGISTERS: dict[str, tuple[str, Construct, str | None]] = {
    "A01": ("forward_active_max_demand", Bcd(3, 4), "kW"),
    "A02": ("reverse_active_max_demand", Bcd(3, 4), "kW"),
    "A11": ("forward_reactive_max_demand", Bcd(3, 2), "kvar"),
    "A12": ("reverse_reactive_max_demand", Bcd(3, 2), "kvar"),
    "B01": ("forward_active_max_demand_time", Timestamp("MMDDhhmm"), None),
    "B02": ("reverse_active_max_demand_time", Timestamp("MMDDhhmm"), None),
    "B11": ("forward_reactive_max_demand_time", Timestamp("MMDDhhmm"), None),
    "B12": ("reverse_reactive_max_demand_time", Timestamp("MMDDhhmm"), None),
}
PHASE_VARIABLES: dict[str, tuple[str, Construct, str | None, tuple[int, ...]]] = {
    "B61": ("voltage", Bcd(2), "V", (1, 2, 3)),
    "B62": ("current", Bcd(2, 2), "A", (1, 2, 3)),
    "B63": ("active_power", Bcd(3, 4), "kW", (0, 1, 2, 3)),
    "B64": ("reactive_power", Bcd(2, 2), "kvar", (0, 1, 2, 3)),
    "B65": ("power_factor", Bcd(2, 3), None, (0, 1, 2, 3)),
}
PHASE_LABELS = {0: "total", 1: "a", 2: "b", 3: "c"}

FIXED_1997: dict[str, Spec] = {
    "B210": ("last_programming_time", Timestamp("MMDDhhmm"), None),
    "B211": ("last_demand_clear_time", Timestamp("MMDDhhmm"), None),
    "B212": ("programming_count", Bcd(2), None),
    "B213": ("demand_clear_count", Bcd(2), None),
    "B214": ("battery_working_time", Bcd(3), "min"),
    "B310": ("phase_break_count_total", Bcd(2), None),
    "C010": ("date_and_weekday", Timestamp("YYMMDDWW"), None),
    "C011": ("time", Timestamp("hhmmss"), None),
    "C020": ("meter_run_status", BitWord(1, {}), None),
    "C021": ("grid_status", BitWord(1, {}), None),
    "C030": ("active_constant", Bcd(3), "imp/kWh"),
    "C031": ("reactive_constant", Bcd(3), "imp/kvarh"),
    "C032": ("meter_number", Digits(6), None),
    "C033": ("user_number", Digits(6), None),
    "C034": ("device_code", Digits(6), None),
    "C111": ("max_demand_period", Bcd(1), "min"),
    "C112": ("slip_time", Bcd(1), "min"),
}


def item_spec(di: str) -> Spec | None:
    """Resolve a normalised 4-hex-digit 1997 DI, or None."""
    if di in FIXED_1997:
        return FIXED_1997[di]
    head, low = di[:3], int(di[3], 16)
    unit: str | None
    if head in ENERGY_REGISTERS and low in TARIFFS:
        name, unit = ENERGY_REGISTERS[head]
        return (f"{name}_{TARIFFS[low]}", GreedyRange(ENERGY) if low == 0xF else ENERGY, unit)
    if head in DEMAND_REGISTERS and low in TARIFFS:
        name, fmt, unit = DEMAND_REGISTERS[head]
        return (f"{name}_{TARIFFS[low]}", GreedyRange(fmt) if low == 0xF else fmt, unit)
    if head in PHASE_VARIABLES:
        name, fmt, unit, phases = PHASE_VARIABLES[head]
        if low in phases:
            return (f"{name}_{PHASE_LABELS[low]}", fmt, unit)
        if low == 0xF:
            return (f"{name}_block", GreedyRange(fmt), unit)
    return None
