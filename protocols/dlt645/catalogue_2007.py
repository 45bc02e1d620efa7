"""The DL/T 645-2007 data identifier catalogue (declarative tables and family rules).

Each entry is ``(name, construct format, unit)``. DI strings are written DI3 DI2 DI1 DI0 as in the
standard (e.g. ``00010000``).
"""

from __future__ import annotations

from construct import Construct, GreedyRange, Struct

from protocols.dlt645.formats import Ascii, BaudWord, Bcd, BitWord, Digits, Opaque, Raw, Timestamp
from protocols.dlt645.profile import ProfileRecords
from protocols.dlt645.tou import tou_items

Spec = tuple[str, Construct, str | None]

ENERGY = Bcd(4, 2)
ENERGY_SIGNED = Bcd(4, 2, signed=True)
DATETIME6 = Timestamp("YYMMDDhhmmss")
DATETIME5 = Timestamp("YYMMDDhhmm")
COUNT3 = Bcd(3)
OPERATOR = Digits(4)
DEMAND_WITH_TIME = Struct("demand" / Bcd(3, 4), "time" / DATETIME5)

# Energy/demand types by DI2 (base 01..0A, phase A = +0x14, B = +0x28, C = +0x3C).
ENERGY_TYPES: dict[int, tuple[str, str, bool]] = {
    0x00: ("combined_active", "kWh", True),
    0x01: ("forward_active", "kWh", False),
    0x02: ("reverse_active", "kWh", False),
    0x03: ("combined_reactive_1", "kvarh", True),
    0x04: ("combined_reactive_2", "kvarh", True),
    0x05: ("q1_reactive", "kvarh", False),
    0x06: ("q2_reactive", "kvarh", False),
    0x07: ("q3_reactive", "kvarh", False),
    0x08: ("q4_reactive", "kvarh", False),
    0x09: ("forward_apparent", "kVAh", False),
    0x0A: ("reverse_apparent", "kVAh", False),
}
PHASE_OFFSETS = {0x14: "a_phase_", 0x28: "b_phase_", 0x3C: "c_phase_"}
DEMAND_UNITS = {"kWh": "kW", "kvarh": "kvar", "kVAh": "kVA"}

STATUS_BITS: dict[int, dict[int, str]] = {
    1: {
        1: "demand_sliding",
        2: "clock_battery_low",
        3: "reading_battery_low",
        4: "active_power_reverse",
        5: "reactive_power_reverse",
        8: "control_loop_error",
        9: "esam_error",
        12: "internal_program_error",
        13: "memory_fault",
        14: "overdraft",
        15: "clock_fault",
    },
    2: {
        0: "a_active_reverse",
        1: "b_active_reverse",
        2: "c_active_reverse",
        4: "a_reactive_reverse",
        5: "b_reactive_reverse",
        6: "c_reactive_reverse",
    },
    3: {
        0: "time_slot_table_2",
        1: "supply_auxiliary",
        2: "supply_battery",
        3: "programming_enabled",
        4: "relay_open",
        5: "time_zone_table_2",
        6: "relay_command_open",
        7: "pre_trip_alarm",
        8: "prepaid_energy",
        9: "prepaid_money",
        10: "step_tariff_table_2",
        11: "step_tariff_set_2",
        12: "keep_power",
        13: "authenticated",
        14: "local_account_not_opened",
        15: "remote_account_not_opened",
    },
    7: {
        0: "voltage_reverse_sequence",
        1: "current_reverse_sequence",
        2: "voltage_imbalance",
        3: "current_imbalance",
        4: "auxiliary_supply_loss",
        5: "power_down",
        6: "demand_over_limit",
        7: "pf_below_limit",
        8: "severe_current_imbalance",
        9: "power_flow_reverse",
        10: "total_loss_of_voltage",
    },
}
PHASE_FAULT_BITS = {
    0: "loss_of_voltage",
    1: "under_voltage",
    2: "over_voltage",
    3: "loss_of_current",
    4: "over_current",
    5: "overload",
    6: "power_reverse",
    7: "phase_break",
    8: "current_break",
}
for _word in (4, 5, 6):
    STATUS_BITS[_word] = PHASE_FAULT_BITS
STATUS_WORDS = {n: BitWord(2, STATUS_BITS[n]) for n in range(1, 8)}
STATUS_BLOCK: Spec = (
    "status_words_block",
    Struct(*(f"status_word_{n}" / STATUS_WORDS[n] for n in range(1, 8))),
    None,
)

SWITCH_RECORD = Struct(
    "time" / DATETIME6,
    "operator" / OPERATOR,
    "forward_active_kwh" / ENERGY,
    "reverse_active_kwh" / ENERGY,
    "q1_reactive_kvarh" / ENERGY,
    "q2_reactive_kvarh" / ENERGY,
    "q3_reactive_kvarh" / ENERGY,
    "q4_reactive_kvarh" / ENERGY,
)
SWITCH_FIELDS: dict[int, Spec] = {
    0x01: ("time", DATETIME6, None),
    0x02: ("operator", OPERATOR, None),
    0x03: ("forward_active_energy", ENERGY, "kWh"),
    0x04: ("reverse_active_energy", ENERGY, "kWh"),
    0x05: ("q1_reactive_energy", ENERGY, "kvarh"),
    0x06: ("q2_reactive_energy", ENERGY, "kvarh"),
    0x07: ("q3_reactive_energy", ENERGY, "kvarh"),
    0x08: ("q4_reactive_energy", ENERGY, "kvarh"),
    0xFF: ("record", SWITCH_RECORD, None),
}
POWER_DOWN_RECORD = Struct("start" / DATETIME6, "end" / DATETIME6)
TIME_SET_RECORD = Struct("operator" / OPERATOR, "before" / DATETIME6, "after" / DATETIME6)
STAMP_RECORD = Struct("time" / DATETIME6, "operator" / OPERATOR)  # programming, meter / event clear
SPAN_EVENTS = {
    "03300D": "meter_cover_open",
    "03300E": "terminal_cover_open",
    "033500": "magnetic_interference",
}
STAMP_EVENTS = {"033000": "programming", "033001": "meter_clear", "033003": "event_clear"}
SPLIT_EVENTS = {0x10: "voltage_loss", 0x13: "phase_failure", 0x1B: "reverse_power"}
SPLIT_PHASES = {0x00: "", 0x01: "_a", 0x02: "_b", 0x03: "_c"}
SPLIT_FIELDS = {0x01: "start", 0x25: "end"}
VARIABLES_SNAPSHOT = Struct(
    *(
        f"{kind}_power_{phase}" / Bcd(3, 4, signed=True)
        for kind in ("active", "reactive")
        for phase in ("total", "a", "b", "c")
    )
)

FREEZE_KINDS = {
    0x00: "timed_freeze",
    0x01: "instant_freeze",
    0x02: "zone_switch_freeze",
    0x03: "slot_switch_freeze",
    0x05: "tariff_price_switch_freeze",
    0x06: "daily_freeze",
    0x07: "step_switch_freeze",
}
FREEZE_FIELDS: dict[int, Spec] = {
    0x00: ("time", DATETIME5, None),
    0x01: ("forward_active_energy", GreedyRange(ENERGY), "kWh"),
    0x02: ("reverse_active_energy", GreedyRange(ENERGY), "kWh"),
    0x03: ("combined_reactive_1_energy", GreedyRange(ENERGY_SIGNED), "kvarh"),
    0x04: ("combined_reactive_2_energy", GreedyRange(ENERGY_SIGNED), "kvarh"),
    0x05: ("q1_reactive_energy", GreedyRange(ENERGY), "kvarh"),
    0x06: ("q2_reactive_energy", GreedyRange(ENERGY), "kvarh"),
    0x07: ("q3_reactive_energy", GreedyRange(ENERGY), "kvarh"),
    0x08: ("q4_reactive_energy", GreedyRange(ENERGY), "kvarh"),
    0x09: ("forward_active_max_demand", GreedyRange(DEMAND_WITH_TIME), "kW"),
    0x0A: ("reverse_active_max_demand", GreedyRange(DEMAND_WITH_TIME), "kW"),
    0x10: ("variables", VARIABLES_SNAPSHOT, None),
    0xFF: ("record", Opaque(), None),
}
HOURLY_FREEZE_FIELDS: dict[int, Spec] = {
    0x00: ("time", DATETIME5, None),
    0x01: ("forward_active_energy_total", ENERGY, "kWh"),
    0x02: ("reverse_active_energy_total", ENERGY, "kWh"),
}
PROFILE_CLASSES = {
    0x00: "all_classes",
    0x01: "voltage_current_frequency",
    0x02: "active_reactive_power",
    0x03: "power_factor",
    0x04: "total_energies",
    0x05: "quadrant_reactive",
    0x06: "demand",
}
PROFILE_MODES = {0x00: "earliest", 0x01: "from_time", 0x02: "latest"}


def _phase_items(
    base: str, name: str, fmt: Construct, unit: str | None, phases: tuple[int, ...]
) -> dict[str, Spec]:
    """Items DI3 DI2 <phase> 00 for the given phase codes (0 = total, 1..3 = A..C) plus the FF block."""
    labels = {0: "total", 1: "a", 2: "b", 3: "c"}
    items: dict[str, Spec] = {f"{base}{p:02X}00": (f"{name}_{labels[p]}", fmt, unit) for p in phases}
    items[f"{base}FF00"] = (f"{name}_block", GreedyRange(fmt), unit)
    return items


def _fixed_items() -> dict[str, Spec]:
    items: dict[str, Spec] = {}
    items.update(_phase_items("0201", "voltage", Bcd(2, 1), "V", (1, 2, 3)))
    items.update(_phase_items("0202", "current", Bcd(3, 3, signed=True), "A", (1, 2, 3)))
    items.update(_phase_items("0203", "active_power", Bcd(3, 4, signed=True), "kW", (0, 1, 2, 3)))
    items.update(_phase_items("0204", "reactive_power", Bcd(3, 4, signed=True), "kvar", (0, 1, 2, 3)))
    items.update(_phase_items("0205", "apparent_power", Bcd(3, 4, signed=True), "kVA", (0, 1, 2, 3)))
    items.update(_phase_items("0206", "power_factor", Bcd(2, 3, signed=True), None, (0, 1, 2, 3)))
    items.update(_phase_items("0207", "phase_angle", Bcd(2, 1), "°", (1, 2, 3)))
    items.update(_phase_items("0208", "voltage_distortion", Bcd(2, 2), "%", (1, 2, 3)))
    items.update(_phase_items("0209", "current_distortion", Bcd(2, 2), "%", (1, 2, 3)))
    items.update(
        {
            "02800001": ("neutral_current", Bcd(3, 3, signed=True), "A"),
            "02800002": ("grid_frequency", Bcd(2, 2), "Hz"),
            "02800003": ("one_minute_average_active_power", Bcd(3, 4, signed=True), "kW"),
            "02800004": ("current_active_demand", Bcd(3, 4, signed=True), "kW"),
            "02800005": ("current_reactive_demand", Bcd(3, 4, signed=True), "kvar"),
            "02800006": ("current_apparent_demand", Bcd(3, 4, signed=True), "kVA"),
            "02800007": ("meter_temperature", Bcd(2, 1, signed=True), "°C"),
            "02800008": ("clock_battery_voltage", Bcd(2, 2), "V"),
            "02800009": ("reading_battery_voltage", Bcd(2, 2), "V"),
            "0280000A": ("battery_working_time", Bcd(4), "min"),
            "04000101": ("date_and_weekday", Timestamp("YYMMDDWW"), None),
            "04000102": ("time", Timestamp("hhmmss"), None),
            "04000103": ("max_demand_period", Bcd(1), "min"),
            "04000104": ("slip_time", Bcd(1), "min"),
            "0400010C": ("date_weekday_time", Timestamp("YYMMDDWWhhmmss"), None),
            "04000401": ("comm_address", Digits(6), None),
            "04000402": ("meter_number", Digits(6), None),
            "04000403": ("asset_number", Ascii(32), None),
            "04000404": ("rated_voltage", Ascii(6), None),
            "04000405": ("rated_current", Ascii(6), None),
            "04000406": ("max_current", Ascii(6), None),
            "04000407": ("accuracy_class", Ascii(4), None),
            "04000409": ("active_constant", Bcd(3), "imp/kWh"),
            "0400040A": ("reactive_constant", Bcd(3), "imp/kvarh"),
            "0400040B": ("meter_model", Ascii(10), None),
            "0400040C": ("production_date", Ascii(10), None),
            "0400040D": ("protocol_version", Ascii(16), None),
            "0400040E": ("customer_number", Digits(6), None),
            "00900200": ("remaining_amount", Bcd(4, 2), "yuan"),
            "00900201": ("overdraft_amount", Bcd(4, 2), "yuan"),
            "03110000": ("power_down_count", COUNT3, None),
            "03300000": ("programming_count", COUNT3, None),
            "03300100": ("meter_clear_count", COUNT3, None),
            "03300200": ("demand_clear_count", COUNT3, None),
            "03300300": ("event_clear_count", COUNT3, None),
            "03300400": ("time_set_count", COUNT3, None),
            "03300D00": ("meter_cover_open_count", COUNT3, None),
            "03300E00": ("terminal_cover_open_count", COUNT3, None),
            "03350000": ("magnetic_interference_count", COUNT3, None),
        }
    )
    for n in range(1, 8):
        items[f"040005{n:02X}"] = (f"status_word_{n}", STATUS_WORDS[n], None)
    for port, label in enumerate(("ir_modulated", "ir_contact", "port_1", "port_2", "port_3"), start=1):
        items[f"040007{port:02X}"] = (f"baud_{label}", BaudWord(), "bit/s")
    for level in range(10):
        items[f"04000C{level + 1:02X}"] = (f"password_level_{level}", Raw(4), None)
    for n, label in enumerate(
        ("alarm_amount_1", "alarm_amount_2", "overdraft_limit", "hoarding_limit", "close_allowed_amount"),
        start=1,
    ):
        items[f"040010{n:02X}"] = (label, Bcd(4, 2), "yuan")
    items.update(tou_items())
    for n in range(1, 11):
        items[f"031100{n:02X}"] = (f"power_down_record_last_{n}", POWER_DOWN_RECORD, None)
        items[f"033004{n:02X}"] = (f"time_set_record_last_{n}", TIME_SET_RECORD, None)
        for prefix, kind in SPAN_EVENTS.items():
            items[f"{prefix}{n:02X}"] = (f"{kind}_record_last_{n}", POWER_DOWN_RECORD, None)
        for prefix, kind in STAMP_EVENTS.items():
            items[f"{prefix}{n:02X}"] = (f"{kind}_record_last_{n}", STAMP_RECORD, None)
    return items


FIXED_2007: dict[str, Spec] = _fixed_items()


def _energy_or_demand(di3: int, di2: int, di1: int, di0: int) -> Spec | None:
    """Energy (DI3 00) and max demand (DI3 01) by type/phase, tariff (DI1) and period (DI0)."""
    prefix = ""
    base = di2
    for offset, label in PHASE_OFFSETS.items():
        if offset < di2 <= offset + 0x0A:
            prefix, base = label, di2 - offset
            break
    if base not in ENERGY_TYPES or di0 > 0x0C or (di1 > 0x3F and di1 != 0xFF):
        return None
    if prefix and di1 not in (0x00, 0xFF):
        return None
    type_name, unit, signed = ENERGY_TYPES[base]
    period = "" if di0 == 0 else f"_last_{di0}"
    tariff = "total" if di1 == 0 else "block" if di1 == 0xFF else f"t{di1}"
    if di3 == 0x00:
        fmt: Construct = ENERGY_SIGNED if signed else ENERGY
        name = f"{prefix}{type_name}_energy_{tariff}{period}"
    else:
        if base == 0x00:
            return None
        fmt, unit = DEMAND_WITH_TIME, DEMAND_UNITS[unit]
        name = f"{prefix}{type_name}_max_demand_{tariff}{period}"
    return (name, GreedyRange(fmt) if di1 == 0xFF else fmt, unit)


def _switch_event(di3: int, di1: int, di0: int, di2: int) -> Spec | None:
    """Trip (1D) and close (1E) event records: count at 00 00 01, fields by DI1, occurrence by DI0."""
    kind = "trip" if di3 == 0x1D else "close"
    if di2 != 0x00:
        return None
    if di1 == 0x00:
        return (f"{kind}_count", COUNT3, None) if di0 == 0x01 else None
    if di1 not in SWITCH_FIELDS or not 1 <= di0 <= 0x0A:
        return None
    name, fmt, unit = SWITCH_FIELDS[di1]
    return (f"{kind}_{name}_last_{di0}", fmt, unit)


def _phase_event(di3: int, di2: int, di1: int, di0: int) -> Spec | None:
    """Loss of voltage (10), phase failure (13), reverse power (1B): phase by DI2 (00 the meter),
    count at DI1 00 / DI0 01, the n-th latest start (DI1 01) and end (DI1 25) time by DI0."""
    if di2 not in SPLIT_PHASES:
        return None
    kind = SPLIT_EVENTS[di3] + SPLIT_PHASES[di2]
    if di1 == 0x00:
        return (f"{kind}_count", COUNT3, None) if di0 == 0x01 else None
    if di1 not in SPLIT_FIELDS or not 1 <= di0 <= 0x0A:
        return None
    return (f"{kind}_{SPLIT_FIELDS[di1]}_last_{di0}", DATETIME6, None)


def _freeze(di2: int, di1: int, di0: int) -> Spec | None:
    """Freeze data (DI3 05): kind by DI2, sub-item by DI1, occurrence by DI0."""
    if di2 == 0x04:
        if di1 not in HOURLY_FREEZE_FIELDS or not 1 <= di0 <= 0xFE:
            return None
        name, fmt, unit = HOURLY_FREEZE_FIELDS[di1]
        return (f"hourly_freeze_{name}_last_{di0}", fmt, unit)
    if di2 not in FREEZE_KINDS or di1 not in FREEZE_FIELDS or not 1 <= di0 <= 0x3E:
        return None
    name, fmt, unit = FREEZE_FIELDS[di1]
    return (f"{FREEZE_KINDS[di2]}_{name}_last_{di0}", fmt, unit)


def _load_profile(di2: int, di1: int, di0: int) -> Spec | None:
    """Load profile (DI3 06): class by DI2, mode by DI0."""
    if di2 not in PROFILE_CLASSES or di1 != 0x00 or di0 not in PROFILE_MODES:
        return None
    return (f"load_profile_{PROFILE_CLASSES[di2]}_{PROFILE_MODES[di0]}", ProfileRecords(di2), None)


def family_item(di: str) -> Spec | None:
    """Resolve a DI of one of the regular families, or None."""
    di3, di2, di1, di0 = bytes.fromhex(di)
    if di3 in (0x00, 0x01):
        return _energy_or_demand(di3, di2, di1, di0)
    if di3 in (0x1D, 0x1E):
        return _switch_event(di3, di1, di0, di2)
    if di3 in SPLIT_EVENTS:
        return _phase_event(di3, di2, di1, di0)
    if di3 == 0x05:
        return _freeze(di2, di1, di0)
    if di3 == 0x06:
        return _load_profile(di2, di1, di0)
    return None
