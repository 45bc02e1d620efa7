"""What the gates of a relay command read when the frame is about to go out, read with the rows it
depends on locked: the command (``FOR UPDATE``), its meter (``FOR SHARE``, through the owner's
function ``headend_lock_command_meter``), account and balance (``FOR SHARE``), so a
concurrent protection, reassignment or payment either commits first (and is seen) or waits for the
``sent`` decision to commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from headend.store.audit import audit
from headend.store.feecontrol import HALT_KEY

_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class AccountFacts:
    """The account the meter is on now, as the arrears rule needs it."""

    kind: str
    arrears: bool
    balance: Decimal
    credit_limit: Decimal
    grace_days: int
    oldest_unpaid_due: datetime | None
    unpaid: Decimal | None
    protected: bool
    protected_reason: str | None
    alarm_before_cut: bool | None = None  # the account's own alarm policy (None: the configured one)


@dataclass(frozen=True)
class SendFacts:
    """A pending command and everything its gates decide on, read in the sending transaction."""

    command_id: int
    state: str
    action: str
    cause: str
    operator: str
    requires_approval: bool
    approved_by: str | None
    last_error: str | None
    made_for: int | None  # the account the meter was on when the command was made
    assigned_to: int | None  # the account the meter is on now
    has_relay: bool
    enabled: bool
    meter_protected: bool
    meter_protected_reason: str | None
    hold: str | None  # why the meter's data is held (an unresolved VEE hold), if it is
    account: AccountFacts | None
    automatic_sent_last_hour: int  # automatic disconnects (alarms: alarms) that went out in the last hour
    halted_by: str | None  # the latched cap halt of automatic disconnection, if any
    protocol: str = "dlt645-2007"
    alarm_confirmed_at: datetime | None = None  # the pre-trip alarm in force on the meter for its account


async def lock_send_facts(conn: asyncpg.Connection, command_id: int, now: datetime) -> SendFacts | None:
    """The command's gate facts with its rows locked until the transaction ends (None: no command).

    Must run inside the transaction that moves the command to ``sent``."""
    if await conn.fetchval("SELECT id FROM commands WHERE id = $1 FOR UPDATE", command_id) is None:
        return None
    # the meter is locked by a function of the schema owner: the daemon has no write grant on meters
    await conn.execute("SELECT headend_lock_command_meter($1)", command_id)
    row = await conn.fetchrow(
        """SELECT c.id, c.state::text AS state, c.action, c.cause, c.operator, c.requires_approval,
                  c.approved_by, c.last_error, c.account_id AS made_for,
                  (SELECT x.account_id FROM meter_assignments x
                   WHERE x.meter_id = m.id AND x.effective_to IS NULL) AS assigned_to,
                  m.has_relay, m.enabled, m.protected, m.protected_reason, m.protocol
           FROM commands c JOIN meters m ON m.id = c.meter_id WHERE c.id = $1""",
        command_id,
    )
    account = None
    if row["assigned_to"] is not None:
        account = await _lock_account(conn, row["assigned_to"])
    hold = await conn.fetchval(
        """SELECT h.reason FROM vee_holds h JOIN commands c ON c.meter_id = h.meter_id
           WHERE c.id = $1 AND h.resolved_at IS NULL ORDER BY h.id LIMIT 1""",
        command_id,
    )
    counted = "alarm" if row["action"] == "alarm" else "disconnect"
    sent_last_hour = await conn.fetchval(
        """SELECT count(*) FROM commands WHERE operator = 'system' AND action = $2
           AND NOT dry_run AND sent_at > $1""",
        now - _HOUR,
        counted,
    )
    alarm = await conn.fetchrow(
        """SELECT w.action, w.confirmed_at FROM commands w JOIN commands c ON c.meter_id = w.meter_id
           WHERE c.id = $1 AND w.account_id = $2 AND w.state = 'confirmed'
             AND w.action IN ('alarm', 'alarm_release')
           ORDER BY w.confirmed_at DESC NULLS LAST, w.id DESC LIMIT 1""",
        command_id,
        row["assigned_to"],
    )
    halted = await conn.fetchval("SELECT value FROM headend_settings WHERE key = $1", HALT_KEY)
    return SendFacts(
        command_id=row["id"],
        state=row["state"],
        action=row["action"],
        cause=row["cause"],
        operator=row["operator"],
        requires_approval=row["requires_approval"],
        approved_by=row["approved_by"],
        last_error=row["last_error"],
        made_for=row["made_for"],
        assigned_to=row["assigned_to"],
        has_relay=row["has_relay"],
        enabled=row["enabled"],
        meter_protected=row["protected"],
        meter_protected_reason=row["protected_reason"],
        hold=hold,
        account=account,
        automatic_sent_last_hour=int(sent_last_hour),
        halted_by=halted,
        protocol=row["protocol"],
        alarm_confirmed_at=alarm["confirmed_at"]
        if alarm is not None and alarm["action"] == "alarm"
        else None,
    )


async def _lock_account(conn: asyncpg.Connection, account_id: int) -> AccountFacts:
    """The account and its balance locked (a payment in flight commits first), then its unpaid bills."""
    acc = await conn.fetchrow(
        """SELECT kind, arrears, credit_limit, grace_days, protected, protected_reason, alarm_before_cut
           FROM accounts WHERE id = $1 FOR SHARE""",
        account_id,
    )
    balance = await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1 FOR SHARE", account_id)
    bills = await conn.fetchrow(
        """SELECT min(due_at) AS oldest, sum(amount) AS unpaid FROM bills
           WHERE account_id = $1 AND paid_at IS NULL""",
        account_id,
    )
    return AccountFacts(
        kind=acc["kind"],
        arrears=acc["arrears"],
        balance=Decimal(balance or 0),
        credit_limit=Decimal(acc["credit_limit"]),
        grace_days=acc["grace_days"],
        oldest_unpaid_due=bills["oldest"],
        unpaid=None if bills["unpaid"] is None else Decimal(bills["unpaid"]),
        protected=acc["protected"],
        protected_reason=acc["protected_reason"],
        alarm_before_cut=acc["alarm_before_cut"],
    )


async def note_waiting(conn: asyncpg.Connection, command_id: int, actor: str, rule: str, reason: str) -> bool:
    """Record why a due command waits (its ``last_error``), audited once per rule: False when the
    command was already waiting on this rule."""
    note = f"waiting: {rule}"
    changed = await conn.fetchval(
        "UPDATE commands SET last_error = $2 WHERE id = $1 AND last_error IS DISTINCT FROM $2 RETURNING id",
        command_id,
        note,
    )
    if changed is None:
        return False
    await audit(conn, actor, "command.waiting", "command", command_id, rule, {"reason": reason})
    return True
