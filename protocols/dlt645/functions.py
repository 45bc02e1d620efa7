"""Function codes, error words and remote-control actions of both editions."""

from __future__ import annotations

from collections.abc import Iterable

from protocols.dlt645.errors import EncodeError

# 2007 function codes
TIME_SYNC = 0x08
SECURITY = 0x03
READ = 0x11
READ_FOLLOWUP = 0x12
READ_ADDRESS = 0x13
WRITE = 0x14
WRITE_ADDRESS = 0x15
FREEZE = 0x16
CHANGE_BAUD = 0x17
CHANGE_PASSWORD = 0x18
DEMAND_RESET = 0x19
METER_CLEAR = 0x1A
EVENT_CLEAR = 0x1B
REMOTE_CONTROL = 0x1C
MULTIFUNCTION_OUTPUT = 0x1D

# 1997 function codes
READ_1997 = 0x01
READ_FOLLOWUP_1997 = 0x02
REREAD_1997 = 0x03
WRITE_1997 = 0x04
WRITE_ADDRESS_1997 = 0x0A
CHANGE_BAUD_1997 = 0x0C
CHANGE_PASSWORD_1997 = 0x0F
DEMAND_RESET_1997 = 0x10

FUNCTIONS_2007 = {
    SECURITY: "security_authentication",
    TIME_SYNC: "time_sync",
    READ: "read",
    READ_FOLLOWUP: "read_followup",
    READ_ADDRESS: "read_address",
    WRITE: "write",
    WRITE_ADDRESS: "write_address",
    FREEZE: "freeze",
    CHANGE_BAUD: "change_baud",
    CHANGE_PASSWORD: "change_password",
    DEMAND_RESET: "demand_reset",
    METER_CLEAR: "meter_clear",
    EVENT_CLEAR: "event_clear",
    REMOTE_CONTROL: "remote_control",
    MULTIFUNCTION_OUTPUT: "multifunction_output",
}
FUNCTIONS_1997 = {
    READ_1997: "read",
    READ_FOLLOWUP_1997: "read_followup",
    REREAD_1997: "reread",
    WRITE_1997: "write",
    TIME_SYNC: "time_sync",
    WRITE_ADDRESS_1997: "write_address",
    CHANGE_BAUD_1997: "change_baud",
    CHANGE_PASSWORD_1997: "change_password",
    DEMAND_RESET_1997: "demand_reset",
}
ONLY_1997 = frozenset(FUNCTIONS_1997) - frozenset(FUNCTIONS_2007)

ERROR_BITS_2007 = ("other", "no_data", "password", "baud", "year_zones", "day_slots", "tariffs", "reserved")
ERROR_BITS_1997 = (
    "illegal_data",
    "di_error",
    "password",
    "reserved_3",
    "year_zones",
    "day_slots",
    "tariffs",
    "reserved",
)

CONTROL_ACTIONS = {
    "trip": 0x1A,
    "close_allowed": 0x1B,
    "close": 0x1C,
    "trip_auto_restore_1": 0x1D,
    "trip_auto_restore_2": 0x1E,
    "alarm": 0x2A,
    "alarm_release": 0x2B,
    "keep_power": 0x3A,
    "keep_power_release": 0x3B,
}
ACTIONS_BY_CODE = {code: name for name, code in CONTROL_ACTIONS.items()}
ENCRYPTED_LEVELS = {0x98: "ciphertext+MAC", 0x99: "plaintext+MAC"}
MULTIFUNCTION_MODES = {
    0x00: "clock_second_pulse",
    0x01: "demand_period_pulse",
    0x02: "time_slot_switch_pulse",
}


def error_flags(word: int, edition: int) -> list[str]:
    """Names of the bits set in an abnormal reply's error word."""
    names = ERROR_BITS_2007 if edition == 2007 else ERROR_BITS_1997
    return [name for bit, name in enumerate(names) if word >> bit & 1]


def error_word(flags: Iterable[str] | int, edition: int) -> int:
    """The error word for flag names (or an int passed through)."""
    if isinstance(flags, int):
        return flags & 0xFF
    names = ERROR_BITS_2007 if edition == 2007 else ERROR_BITS_1997
    word = 0
    for flag in flags:
        if flag not in names:
            raise EncodeError(f"unknown {edition} error flag {flag!r}; known: {', '.join(names)}")
        word |= 1 << names.index(flag)
    return word
