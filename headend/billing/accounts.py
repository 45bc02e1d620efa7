"""Accounts and meter-to-account assignments with effective times (a tenant change bills each period once)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from headend.inventory import InventoryError, find_meter
from headend.store import accounts as store
from headend.store import feecontrol
from headend.store.audit import audit
from headend.store.commands import create_command
from headend.store.tariffs import tariff_id_by_name
from headend.vocabulary import RECONNECT_MODES

KINDS = ("prepaid", "postpaid")
SETTABLE = {
    "name",
    "tariff",
    "credit_limit",
    "grace_days",
    "protected",
    "protected_reason",
    "reconnect_mode",
    "alarm_before_cut",
    "active",
}


class AccountError(ValueError):
    """An account or assignment change that cannot be made; the message says why."""


async def add_account(
    conn: asyncpg.Connection,
    number: str,
    kind: str,
    *,
    name: str = "",
    tariff: str | None = None,
    credit_limit: Decimal = Decimal(0),
    operator: str,
) -> int:
    """Create an account (audited); returns its id."""
    if kind not in KINDS:
        raise AccountError(f"kind must be prepaid or postpaid, got {kind!r}")
    async with conn.transaction():
        tariff_id = None if tariff is None else await _tariff(conn, tariff)
        try:
            account_id = await store.insert_account(conn, number, name, kind, tariff_id, credit_limit)
        except asyncpg.UniqueViolationError:
            raise AccountError(f"account {number!r} exists already") from None
        await audit(conn, operator, "account.created", "account", number, "created", {"kind": kind})
    return account_id


async def _tariff(conn: asyncpg.Connection, name: str) -> int:
    tariff_id = await tariff_id_by_name(conn, name)
    if tariff_id is None:
        raise AccountError(f"unknown tariff {name!r}")
    return tariff_id


async def set_account(
    conn: asyncpg.Connection, number: str, changes: dict[str, object], *, operator: str
) -> None:
    """Change an account's settings (audited with the old and new values)."""
    unknown = set(changes) - SETTABLE
    if unknown or not changes:
        raise AccountError(f"settable: {', '.join(sorted(SETTABLE))}")
    if changes.get("reconnect_mode") not in (None, *RECONNECT_MODES):
        raise AccountError("reconnect_mode must be close or close_allowed")
    columns = dict(changes)
    if "alarm_before_cut" in columns:
        alarm = columns["alarm_before_cut"]
        if alarm not in (True, False, None, "true", "false", "policy"):
            raise AccountError("alarm_before_cut must be true, false or policy (the configured [safety] one)")
        columns["alarm_before_cut"] = {"true": True, "false": False, "policy": None}.get(str(alarm), alarm)
    async with conn.transaction():
        if "tariff" in columns:
            columns["tariff_id"] = await _tariff(conn, str(columns.pop("tariff")))
        if not await store.update_account(conn, number, columns):
            raise AccountError(f"unknown account {number!r}")
        await audit(
            conn,
            operator,
            "account.changed",
            "account",
            number,
            "settings",
            {k: str(v) for k, v in changes.items()},
        )


async def _restore_supply(
    conn: asyncpg.Connection, meter_id: int, label: str, assignment: int, operator: str, at: datetime
) -> None:
    """A meter disconnected for the previous tenant's arrears is reconnected for the new tenant (a
    persisted command in the operator's name); a disconnect not yet sent is cancelled."""
    await feecontrol.cancel_pending_disconnects(conn, meter_id)
    busy = await feecontrol.open_command(conn, meter_id)
    if busy is not None:
        raise AccountError(
            f"meter {label} has relay command {busy['id']} in flight; assign again once it is settled"
        )
    if await feecontrol.last_confirmed_action(conn, meter_id) == "disconnect":
        await create_command(
            conn,
            meter_id=meter_id,
            action="reconnect",
            cause="tenant_change",
            operator=operator,
            idempotency_key=f"tenant:{assignment}",
            now=max(at, datetime.now(UTC)),
        )


async def assign_meter(
    conn: asyncpg.Connection,
    meter: str,
    account: str,
    *,
    at: datetime,
    operator: str,
    reason: str,
    reading: Decimal | None = None,
) -> int:
    """Assign ``meter`` to ``account`` from ``at`` on (a tenant change): the previous assignment ends at
    ``at``, billing gives each account only its own part; a relay left open for the previous tenant's
    arrears is reconnected. Refused when ``at`` is before the time the previous account has already
    been billed to (that needs a ledger adjustment instead). ``reading`` is the register read at the
    move (kWh): stored as a reading at ``at`` so each tenant pays exactly its part; without it the
    split falls on the last reading before ``at``."""
    if at.tzinfo is None:
        raise AccountError("the assignment time needs a UTC offset")
    try:
        meter_id, label = await find_meter(conn, meter)
    except InventoryError as exc:
        raise AccountError(str(exc)) from None
    async with conn.transaction():
        target = await store.account_ref(conn, account)
        if target is None:
            raise AccountError(f"unknown account {account!r}")
        await store.lock_meter(conn, meter_id)
        current = await store.open_assignment(conn, meter_id)
        if current is not None:
            previous_billed = current["billed_until"]
            if at <= current["effective_from"]:
                raise AccountError(
                    f"meter {label} is assigned since {current['effective_from']:%Y-%m-%d %H:%M}"
                )
            await store.end_assignment(conn, current["id"], at)
        else:
            previous_billed = None
        if previous_billed is not None and at < previous_billed:
            raise AccountError(
                f"the previous account is billed until {previous_billed.isoformat()}: an assignment from "
                f"{at.isoformat()} would bill that period twice; use `headend billing adjust`"
            )
        if target["billed_until"] is not None and at < target["billed_until"]:
            raise AccountError(f"account {account} is billed until {target['billed_until'].isoformat()}")
        if reading is not None:
            await store.add_register_reading(conn, meter_id, at, reading, "assignment")
        assignment = await store.insert_assignment(conn, meter_id, target["id"], at, None, operator)
        await _restore_supply(conn, meter_id, label, assignment, operator, at)
        await audit(
            conn,
            operator,
            "meter.assigned",
            "meter",
            label,
            reason,
            {"account": account, "from": at.isoformat()},
        )
    return assignment
