"""The JSON API's response documents (what /api/openapi.json describes)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChannelCollection(_Out):
    """A channel's enabled meters and how many have a reading today (rate: None without meters)."""

    channel: str
    enabled: bool
    meters: int
    read: int
    rate: float | None


class NotRead(_Out):
    """An enabled meter without a reading today, and the first reason that applies."""

    name: str | None
    channel: str
    reason: Literal["channel_disabled", "quarantined", "held", "no_reply", "not_read_yet"]
    last_error_at: datetime | None


class InFlight(_Out):
    """Open commands in one state, and how many of them wait for an approver."""

    state: str
    commands: int
    awaiting_approval: int


class FeeControl(_Out):
    """Whether automatic disconnection is halted (by which cap), commands in flight, open VEE holds."""

    halted: bool
    halted_by: str | None
    in_flight: list[InFlight]
    open_holds: int


class OverviewOut(_Out):
    """The fleet today (the station's local day)."""

    day: date
    collection: list[ChannelCollection]
    not_read: list[NotRead]
    fee_control: FeeControl


class MeterFields(_Out):
    """A meter's identity and state; ``relay``: open, closed, unknown (no confirmed command) or none."""

    id: int
    name: str | None
    protocol: str
    address: str
    model: str
    enabled: bool
    has_relay: bool
    protected: bool
    protected_reason: str | None
    channel: str
    account: str | None
    last_read: datetime | None
    last_contact: datetime | None
    clock_offset_s: float | None
    relay: Literal["open", "closed", "unknown", "none"]
    open_holds: int
    quarantined_until: datetime | None


class Latest(_Out):
    """The newest reading of one quantity."""

    quantity: str
    ts: datetime
    value: float | None
    quality: str
    unit: str | None


class CurvePoint(_Out):
    """A stored energy reading of the day and the average demand (kW) since the reading before it."""

    ts: datetime
    kwh: float
    kw: float | None
    quality: str


class Bar(_Out):
    """A local day's, week's or month's consumption, by its first day (None: no reading in it or in
    the one before)."""

    start: date
    kwh: float | None


class Consumption(_Out):
    """The energy register's growth per local day (14), week from Monday (12) or month (12) up to the
    day asked for, from the hourly aggregate (TimescaleDB's continuous aggregate or its native twin)."""

    period: Literal["day", "week", "month"]
    bars: list[Bar]


class Event(_Out):
    """A meter or communication event (details: JSON text)."""

    occurred_at: datetime
    category: str
    kind: str
    details: str


class CommandRow(_Out):
    """A relay command as listed."""

    id: int
    action: str
    state: str
    cause: str
    operator: str | None
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


class MeterOut(_Out):
    """One meter and the day asked for."""

    meter: MeterFields
    latest: list[Latest]
    day: date
    load_curve: list[CurvePoint]
    consumption: Consumption
    events: list[Event]
    commands: list[CommandRow]


class CommandListed(CommandRow):
    """A relay command with its meter and approval."""

    meter: str | None
    approved_by: str | None
    requires_approval: bool


class CommandsOut(_Out):
    """Commands, newest first, and the filter applied."""

    state: str | None
    meter: str | None
    commands: list[CommandListed]


class AuditEntry(_Out):
    """Who did what to the command, when and why."""

    at: datetime
    actor: str
    action: str
    reason: str | None


class CommandOut(CommandListed):
    """One command: its read-back evidence, who may approve it, its audit trail."""

    address: str
    sent_at: datetime | None
    attempts: int
    evidence: dict[str, object] | None
    awaiting_approval: bool
    may_approve: list[str]
    audit: list[AuditEntry]


class RequestedValue(BaseModel):
    """One value an on-demand read returned (also stored as a reading)."""

    quantity: str
    value: float | None


class MeterRequestState(BaseModel):
    """A meter request as stored."""

    id: int
    meter: str
    channel: str
    kind: str
    requested_by: str
    quantities: list[str] | None
    range_from: datetime | None
    range_to: datetime | None
    state: str
    reason: str | None
    filled: int | None
    missing: int | None
    requested_at: datetime
    expires_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    final: bool


class MeterRequestOut(BaseModel):
    """An on-demand read or re-collection with the daemon's answer."""

    request: MeterRequestState
    read_at: datetime | None
    values: list[RequestedValue]


class AccountStatus(_Out):
    """An account's balance and arrears state (amounts as decimal text in the account's currency)."""

    number: str
    kind: str
    balance: str
    credit_limit: str
    arrears: bool
    arrears_since: datetime | None
    notice_sent_at: datetime | None
    protected: bool


class AccountsOut(_Out):
    """Every account, and the accounts in arrears."""

    accounts: list[AccountStatus]
    arrears: list[AccountStatus]


class AccountFields(_Out):
    """An account's settings and balance."""

    number: str
    name: str | None
    kind: str
    tariff: str | None
    credit_limit: str
    grace_days: int | None
    protected: bool
    reconnect_mode: str | None
    active: bool
    arrears: bool
    arrears_since: datetime | None
    balance: str
    billed_until: datetime | None


class LedgerEntry(_Out):
    """A ledger entry with the running balance after it."""

    at: datetime
    kind: str
    amount: str
    balance: str
    reference: str | None
    kwh: str | None


class BillOut(_Out):
    """A bill of the period."""

    id: int
    period_start: datetime
    period_end: datetime
    consumption: str
    amount: str
    due_at: datetime | None
    paid_at: datetime | None


class PaymentListed(_Out):
    """A payment recorded (its reference is unique: recorded once)."""

    id: int
    amount: str
    reference: str
    source: str
    operator: str | None
    paid_at: datetime


class AccountOut(_Out):
    """An account, its ledger of local days [first, last] between the opening and closing balance,
    the period's bills and its newest payments."""

    account: AccountFields
    first: date
    last: date
    opening: str
    closing: str
    ledger: list[LedgerEntry]
    bills: list[BillOut]
    payments: list[PaymentListed]


class ChannelListed(_Out):
    """A channel's health: meters, last contact, timeouts in 24 h, meters quarantined now, and its last
    complete read cycle (due, succeeded, utilisation: busy time over the interval, 1.3 = 130 %)."""

    name: str
    kind: str
    url: str | None
    enabled: bool
    meters: int
    last_contact: datetime | None
    timeouts_24h: int
    quarantined: int
    last_cycle_at: datetime | None
    last_cycle_due: int | None
    last_cycle_succeeded: int | None
    last_cycle_utilisation: float | None


class PendingDevice(_Out):
    """A device that dialled in with an identity no channel has (adopt it: add a dtu://ID channel)."""

    identity: str
    kind: str
    listener: str
    peer: str
    first_seen: datetime
    last_seen: datetime
    attempts: int
    conflicts: int
    status: Literal["held", "refused", "conflict"]


class ChannelsOut(_Out):
    """Every channel, and the dial-in devices pending adoption."""

    channels: list[ChannelListed]
    pending: list[PendingDevice]


class ChannelFields(_Out):
    """A channel's settings, last contact and timeouts in the last 24 hours."""

    name: str
    kind: str
    address: str | None
    url: str | None
    enabled: bool
    meters: int
    last_contact: datetime | None
    timeouts_24h: int


class Success(_Out):
    """Meters read of those due over the last complete read cycles (rate: None without any due)."""

    cycles: int
    due: int
    succeeded: int
    rate: float | None


class Cycle(_Out):
    """A complete read cycle."""

    cycle_at: datetime
    due: int
    succeeded: int
    readings: int
    utilisation: float | None


class ChannelMeter(_Out):
    """A meter of the channel and its last successful read."""

    name: str | None
    protocol: str
    address: str
    enabled: bool
    last_read: datetime | None


class LineError(_Out):
    """A communication event of the channel (timeout, bad frame, quarantine ...)."""

    occurred_at: datetime
    kind: str
    details: str | None


class Quarantined(_Out):
    """A meter quarantined now (skipped until ``until`` after repeated failures)."""

    name: str | None
    address: str
    since: datetime
    until: datetime


class ChannelOut(_Out):
    """One channel: settings, success and utilisation of its last cycles, meters, line errors, and
    its quarantined meters."""

    channel: ChannelFields
    success: Success
    cycles: list[Cycle]
    meters: list[ChannelMeter]
    errors: list[LineError]
    quarantined: list[Quarantined]


class AuditRow(_Out):
    """An audit entry: who did what to which entity, why, with details (JSON text)."""

    id: int
    at: datetime
    actor: str
    action: str
    entity: str | None
    entity_id: str | None
    reason: str | None
    details: str


class AuditOut(_Out):
    """The newest matching audit entries (at most ``limit``), newest first."""

    entries: list[AuditRow]
    limit: int
