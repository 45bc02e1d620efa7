"""The words the layers share, as types: relay actions, command states, reading qualities, job kinds.

Each value is spelled exactly as the database stores it (the enums and CHECK constraints in
``headend/store/migrations``), so a word crosses CLI, store, engine and driver unchanged. The one
translation, from a command's relay action to the operation a meter's relay performs, lives here too.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

RelayAction = Literal["disconnect", "reconnect", "alarm", "alarm_release"]
"""What an operator or rule asks of a meter's relay (``commands.action``, ``headend command``): cut or
restore the supply, or sound / silence the meter's pre-trip alarm (the warning before a cut)."""

AlarmAction = Literal["alarm", "alarm_release"]
"""The relay actions that only warn (0x1C 2A / 2B): the supply is not switched."""

SwitchOperation = Literal["off", "on", "close_allowed", "alarm", "alarm_release"]
"""What a driver's ``switch`` makes the relay do: trip, close, allow the customer to close it, or
sound / silence the pre-trip alarm (status word 3 bit 7)."""

SWITCH_OPERATION: Final[dict[RelayAction, SwitchOperation]] = {
    "disconnect": "off",
    "reconnect": "on",
    "alarm": "alarm",
    "alarm_release": "alarm_release",
}
"""The operation that carries out each relay action."""

ReconnectMode = Literal["close", "close_allowed"]
"""How a reconnect is carried out (``accounts.reconnect_mode``, ``commands.reconnect_mode``, ``[safety]
reconnect_mode``): the head-end closes the relay, or allows the customer to close it (合闸允许)."""

RECONNECT_OPERATION: Final[dict[ReconnectMode, SwitchOperation]] = {
    "close": "on",
    "close_allowed": "close_allowed",
}
"""The operation that carries out a reconnect in each mode."""

SwitchStatus = Literal["confirmed", "refused", "unconfirmed", "failed"]
"""A driver's verdict on a switch: confirmed only by reading the relay back."""

CommandState = Literal["pending", "sent", "confirmed", "failed", "cancelled", "expired"]
"""A relay command's state (the ``command_state`` enum)."""

OPEN_COMMAND_STATES: Final[tuple[CommandState, ...]] = ("pending", "sent")
"""States of a command still in flight (at most one per meter)."""

ReadingQuality = Literal["actual", "backfilled", "freeze", "estimated", "suspect", "missing"]
"""How a stored reading came about (the ``reading_quality`` enum)."""

JobKind = Literal["read", "on_demand", "backfill", "clock", "events", "archive", "control", "stop"]
"""The work a channel worker job does (logs and metrics label jobs with it)."""

ProfileSource = Literal["load_profile", "daily_freeze"]
"""Where a record read from a meter's memory came from."""

ExceptionRule = Literal[
    "register_backwards",
    "meter_stopped",
    "reverse_energy",
    "voltage_loss",
    "current_imbalance",
    "consumption_spike",
    "clock_offset",
    "tamper",
    "no_read",
    "loss_above_limit",
    "negative_loss",
    "loss_jump",
]
"""What an exception's rule found (the ``exceptions.rule`` check of migration 0042)."""

ExceptionState = Literal["open", "acknowledged", "dispatched", "resolved", "auto_closed"]
"""Where an exception is in its life (``exceptions.state``)."""

RELAY_ACTIONS: Final[tuple[RelayAction, ...]] = get_args(RelayAction)
ALARM_ACTIONS: Final[tuple[AlarmAction, ...]] = get_args(AlarmAction)
RECONNECT_MODES: Final[tuple[ReconnectMode, ...]] = get_args(ReconnectMode)
SWITCH_OPERATIONS: Final[tuple[SwitchOperation, ...]] = get_args(SwitchOperation)
COMMAND_STATES: Final[tuple[CommandState, ...]] = get_args(CommandState)
READING_QUALITIES: Final[tuple[ReadingQuality, ...]] = get_args(ReadingQuality)
JOB_KINDS: Final[tuple[JobKind, ...]] = get_args(JobKind)
EXCEPTION_RULES: Final[tuple[ExceptionRule, ...]] = get_args(ExceptionRule)
EXCEPTION_STATES: Final[tuple[ExceptionState, ...]] = get_args(ExceptionState)
