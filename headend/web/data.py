"""What each page shows, gathered from the reporting login's connection: the same dictionaries are
rendered as HTML and returned as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg

from headend.inventory import InventoryError, find_meter
from headend.store import approvals, console, console_accounts, console_audit, console_channels
from headend.store.accounts import account_statuses
from headend.store.accounts import accounts as account_list
from headend.store.audit import audit_trail
from headend.store.console_audit import AuditFilter
from headend.store.dialin import PendingRow, list_pending
from headend.store.meter_requests import get_request
from headend.store.overview import account_statement, channel_overview, meter_overview_in
from headend.store.plans import plan_for_parameters
from headend.vocabulary import COMMAND_STATES
from headend.web.svg import Point

Row = dict[str, object]
RELAY_STATE = {"disconnect": "open", "reconnect": "closed"}


class NotFound(LookupError):
    """What a page asks for does not exist; the message says what."""


class BadRequest(ValueError):
    """A query parameter that cannot be used; the message says why."""


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight of ``day`` and of the day after, in ``zone``."""
    start = datetime.combine(day, time(0), zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), zone)


def parse_day(text: str | None, zone: ZoneInfo) -> date:
    """``YYYY-MM-DD``, or today in ``zone``."""
    if not text:
        return datetime.now(zone).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"day must be YYYY-MM-DD, got {text[:20]!r}") from None


def period(first: str | None, last: str | None, zone: ZoneInfo, days: int = 90) -> tuple[date, date]:
    """Local days ``[first, last]`` from ``YYYY-MM-DD`` texts; by default the ``days`` up to today."""
    end = parse_day(last, zone)
    if not 1970 <= end.year <= 9999 - 1:
        raise BadRequest(f"day {end} is outside 1970..9998")
    start = parse_day(first, zone) if first else end - timedelta(days=days - 1)
    if end < start:
        raise BadRequest("the period must end on or after its first day")
    if (end - start).days > 3660:
        raise BadRequest("the period is at most ten years")
    return start, end


def _rate(read: object, meters: object) -> float | None:
    """The share of meters read (None without meters)."""
    if not isinstance(read, int) or not isinstance(meters, int) or meters == 0:
        return None
    return read / meters


async def overview(conn: asyncpg.Connection, zone: ZoneInfo, today: date) -> Row:
    """Collection on ``today`` (local) per channel, meters not read that day with why, fee-control
    state now."""
    start, end = day_bounds(today, zone)
    found = await console.overview(conn, start, end)
    collection = [{**c, "rate": _rate(c["read"], c["meters"])} for c in found.collection]
    return {
        "day": today,
        "collection": collection,
        "not_read": found.not_read,
        "fee_control": {
            "halted": found.halted_by is not None,
            "halted_by": found.halted_by,
            "in_flight": found.in_flight,
            "open_holds": found.open_holds,
        },
    }


@dataclass(frozen=True, slots=True)
class MeterPage:
    """A meter's data and its chart points (the points also appear in ``data["load_curve"]``)."""

    data: Row
    points: list[Point]
    bars: list[tuple[date, float | None]]
    period: str
    day_start: datetime
    day_end: datetime


BARS = {"day": 14, "week": 12, "month": 12}  # how many periods the consumption chart shows


def first_days(day: date, period: str) -> list[date]:
    """The first days of the ``BARS[period]`` local days, weeks (from Monday) or months up to ``day``."""
    if period not in BARS:
        raise BadRequest(f"period must be one of {', '.join(BARS)}, got {period[:20]!r}")
    count = BARS[period]
    if period == "day":
        return [day - timedelta(days=count - 1 - i) for i in range(count)]
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return [monday - timedelta(weeks=count - 1 - i) for i in range(count)]
    months = [(day.year * 12 + day.month - 1) - (count - 1 - i) for i in range(count)]
    return [date(m // 12, m % 12 + 1, 1) for m in months]


async def meter(
    conn: asyncpg.Connection, name: str, day: date, zone: ZoneInfo, period: str = "day"
) -> MeterPage:
    """Identity, channel, account, latest readings, relay, clock offset, the day's load curve, the
    consumption of the 14 days, 12 weeks or 12 months up to it (``period``), events and command
    history."""
    starts = first_days(day, period)
    start, end = day_bounds(day, zone)
    bars_start, _ = day_bounds(starts[0], zone)
    async with conn.transaction(readonly=True):  # one snapshot
        try:
            meter_id, _ = await find_meter(conn, name)
        except InventoryError as exc:
            raise NotFound(str(exc)) from None
        # the bars read the hourly aggregate, whose part past its watermark is only bounded when the
        # statement runs: a plan for the parameters would plan every partition or chunk at each page
        known = dict(await console.consumption(conn, meter_id, bars_start, end, zone.key, period))
        await plan_for_parameters(conn)  # the curve and the recent readings: bounded in time
        curve = await console.load_curve(conn, meter_id, start, end)
        found = await meter_overview_in(conn, meter_id, recent=20)
    fields = dict(found.fields)
    action = fields.pop("last_relay_action")
    fields["relay"] = "none" if not fields["has_relay"] else RELAY_STATE.get(str(action), "unknown")
    points = [Point(r.ts.astimezone(zone), r.kw, r.quality) for r in curve if r.kw is not None]
    bars = [(d, known.get(d)) for d in starts]
    data: Row = {
        "meter": fields,
        "latest": found.lists["latest"],
        "day": day,
        # as dataclasses.asdict gives, without its deep copy of every value
        "load_curve": [{"ts": r.ts, "kwh": r.kwh, "kw": r.kw, "quality": r.quality} for r in curve],
        "consumption": {"period": period, "bars": [{"start": d, "kwh": v} for d, v in bars]},
        "events": found.lists["events"],
        "commands": found.lists["commands"],
    }
    return MeterPage(data, points, bars, period, start, end)


async def commands(conn: asyncpg.Connection, state: str | None, meter_ref: str | None) -> Row:
    """Commands, newest first, filtered by state and meter."""
    if state is not None and state not in COMMAND_STATES:
        raise BadRequest(f"state must be one of {', '.join(COMMAND_STATES)}, got {state[:40]!r}")
    return {"state": state, "meter": meter_ref, "commands": await console.commands(conn, state, meter_ref)}


async def command(conn: asyncpg.Connection, command_id: int) -> Row:
    """One command, its read-back evidence, who may approve it and its audit trail."""
    row = await console.command(conn, command_id)
    if row is None:
        raise NotFound(f"no command {command_id}")
    evidence = row.pop("evidence")
    awaiting = await approvals.approval_of(conn, command_id)
    return {
        **row,
        "evidence": json.loads(evidence) if isinstance(evidence, str) else evidence,
        "awaiting_approval": awaiting is not None,
        "may_approve": awaiting or [],
        "audit": [dict(r) for r in await audit_trail(conn, "command", command_id)],
    }


async def meter_request(conn: asyncpg.Connection, request_id: int) -> Row:
    """An on-demand read or re-collection: its state, the daemon's answer (the values read, or what
    a re-collection filled and left missing) or why it failed."""
    found = await get_request(conn, request_id)
    if found is None:
        raise NotFound(f"no meter request {request_id}")
    result = found.result or {}
    values = result.get("values")
    shown = [{"quantity": q, "value": v} for q, v in values.items()] if isinstance(values, dict) else []
    read_at = result.get("read_at")
    return {
        "request": {**{name: getattr(found, name) for name in found.__slots__}, "final": found.final},
        "read_at": datetime.fromisoformat(read_at) if isinstance(read_at, str) else None,
        "values": shown,
    }


async def accounts(conn: asyncpg.Connection) -> Row:
    """Every account's balance and arrears flag, and the accounts in arrears (the arrears list)."""
    listed = [dict(r) for r in await account_statuses(conn)]
    return {"accounts": listed, "arrears": [a for a in listed if a["arrears"]]}


async def account(conn: asyncpg.Connection, number: str, first: date, last: date, zone: ZoneInfo) -> Row:
    """An account's settings and balance, its ledger of local days ``[first, last]`` with the running
    balance, that period's bills, and its newest payments."""
    found = await account_list(conn, number)
    if not found:
        raise NotFound(f"unknown account {number!r}")
    start, _ = day_bounds(first, zone)
    _, end = day_bounds(last, zone)
    statement = await account_statement(conn, number, start, end)
    if statement is None:
        raise NotFound(f"unknown account {number!r}")
    balance = Decimal(str(statement.fields["opening"]))
    ledger = []
    for entry in statement.lists["entries"]:
        balance += Decimal(str(entry["amount"]))
        ledger.append({**entry, "amount": str(entry["amount"]), "balance": str(balance)})
    bills = [
        {**b, "amount": str(b["amount"]), "consumption": str(b["consumption"])}
        for b in statement.lists["bills"]
    ]
    return {
        "account": dict(found[0]),
        "first": first,
        "last": last,
        "opening": str(statement.fields["opening"]),
        "closing": str(balance),
        "ledger": ledger,
        "bills": bills,
        "payments": await console_accounts.payments(conn, number),
    }


def _pending(row: PendingRow) -> Row:
    """A dial-in identity no channel has: held for adoption, refused, or in conflict."""
    status = "conflict" if row.conflicts else "held" if row.held else "refused"
    fields = ("identity", "kind", "listener", "peer", "first_seen", "last_seen", "attempts", "conflicts")
    return {**{name: getattr(row, name) for name in fields}, "status": status}


async def channels(conn: asyncpg.Connection) -> Row:
    """Every channel's health (meters, last contact, timeouts, quarantined meters, last read cycle) and
    the dial-in devices pending adoption (what ``headend channels pending`` lists)."""
    return {
        "channels": await console_channels.channels(conn),
        "pending": [_pending(r) for r in await list_pending(conn)],
    }


async def channel(conn: asyncpg.Connection, name: str) -> Row:
    """One channel as ``headend channels show`` has it (settings, last contact, the success and
    utilisation of its last read cycles, meters, communication errors) and its quarantined meters."""
    found = await channel_overview(conn, name, recent=20)
    if found is None:
        raise NotFound(f"unknown channel {name!r}")
    fields = dict(found.fields)
    fields.pop("id", None)
    cycles = found.lists["cycles"]
    due = sum(int(str(c["due"])) for c in cycles)
    succeeded = sum(int(str(c["succeeded"])) for c in cycles)
    return {
        "channel": fields,
        "success": {"cycles": len(cycles), "due": due, "succeeded": succeeded, "rate": _rate(succeeded, due)},
        "cycles": cycles,
        "meters": found.lists["meter_list"],
        "errors": found.lists["errors"],
        "quarantined": await console_channels.quarantined(conn, name),
    }


async def audit_filter(
    conn: asyncpg.Connection,
    operator: str | None,
    action: str | None,
    meter_ref: str | None,
    first: str | None,
    last: str | None,
    zone: ZoneInfo,
) -> AuditFilter:
    """The audit entries asked for: an operator, an action (or a prefix such as ``command.``), a meter
    (name or address), local days ``[first, last]``; an empty field means any."""
    meter_id = None
    if meter_ref:
        try:
            meter_id, _ = await find_meter(conn, meter_ref)
        except InventoryError as exc:
            raise NotFound(str(exc)) from None
    since = day_bounds(parse_day(first, zone), zone)[0] if first else None
    until = day_bounds(parse_day(last, zone), zone)[1] if last else None
    if since is not None and until is not None and until <= since:
        raise BadRequest("the period must end on or after its first day")
    return AuditFilter(operator or None, action or None, meter_id, since, until)


async def audit(conn: asyncpg.Connection, which: AuditFilter, limit: int) -> Row:
    """The newest ``limit`` audit entries that match, newest first."""
    return {"entries": await console_audit.entries(conn, which, limit), "limit": limit}
