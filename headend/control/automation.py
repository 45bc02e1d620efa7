"""One automatic fee-control run: update arrears flags, then create disconnect/reconnect commands through
the safety policy; refusals and halts are written to the audit log with their rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from headend.audit import audit
from headend.billing.arrears import AccountPosition, arrears_state
from headend.control.safety import Candidate, CapExceeded, SafetySettings, evaluate_run
from headend.control.store import create_command

SYSTEM = "system"
HALT_KEY = "fee_control_halted"  # headend_settings row present while automation is halted by a cap

_ACCOUNTS = """
SELECT a.id, a.number, a.kind, a.credit_limit, a.grace_days, a.arrears, a.arrears_since, a.notice_sent_at,
       a.protected, coalesce(b.balance, 0) AS balance,
       (SELECT min(due_at) FROM bills WHERE account_id = a.id AND paid_at IS NULL) AS oldest_unpaid_due
FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
WHERE a.active ORDER BY a.id"""


@dataclass
class RunReport:
    """What one run did."""

    flagged: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    halted: str | None = None


async def _audit(
    conn: asyncpg.Connection, action: str, entity: str, entity_id: Any, reason: str, details: dict[str, Any]
) -> None:
    await audit(conn, SYSTEM, action, entity, entity_id, reason, details)


async def _update_flags(
    conn: asyncpg.Connection, now: datetime, notice: timedelta, report: RunReport
) -> None:
    for acc in await conn.fetch(_ACCOUNTS):
        position = AccountPosition(
            acc["kind"],
            Decimal(acc["balance"]),
            Decimal(acc["credit_limit"]),
            acc["grace_days"],
            acc["oldest_unpaid_due"],
            acc["notice_sent_at"],
        )
        state = arrears_state(position, now, notice)
        evidence = {"balance": str(acc["balance"]), "oldest_unpaid_due": acc["oldest_unpaid_due"]}
        if state == "notice":
            await conn.execute("UPDATE accounts SET notice_sent_at = $2 WHERE id = $1", acc["id"], now)
            await _audit(conn, "account.notice", "account", acc["number"], "arrears warning", evidence)
            report.notices.append(acc["number"])
        elif state == "arrears" and not acc["arrears"]:
            await conn.execute(
                "UPDATE accounts SET arrears = true, arrears_since = $2 WHERE id = $1", acc["id"], now
            )
            await _audit(conn, "account.arrears_flagged", "account", acc["number"], "arrears", evidence)
            report.flagged.append(acc["number"])
        elif state == "clear" and (acc["arrears"] or acc["notice_sent_at"] is not None):
            await conn.execute(
                "UPDATE accounts SET arrears = false, notice_sent_at = NULL WHERE id = $1", acc["id"]
            )
            await _audit(conn, "account.arrears_cleared", "account", acc["number"], "paid", evidence)
            report.cleared.append(acc["number"])


async def _candidates(conn: asyncpg.Connection) -> list[tuple[Candidate, str]]:
    """Meters with a relay that need a command: (candidate, idempotency key of this arrears episode)."""
    rows = await conn.fetch(
        """SELECT m.id AS meter_id, m.protected OR a.protected AS protected, a.arrears, a.arrears_since,
                  a.id AS acc
           FROM meters m JOIN accounts a ON a.id = m.account_id
           WHERE m.has_relay AND m.enabled AND a.arrears_since IS NOT NULL ORDER BY m.id"""
    )
    wanted: list[tuple[Candidate, str]] = []
    for row in rows:
        episode = f"{row['acc']}:{row['meter_id']}:{row['arrears_since'].isoformat()}"
        disconnect_key, reconnect_key = f"arrears:{episode}", f"paid:{episode}"
        done = {
            r["idempotency_key"]
            for r in await conn.fetch(
                "SELECT idempotency_key FROM commands WHERE idempotency_key = ANY($1::text[])",
                [disconnect_key, reconnect_key],
            )
        }
        if row["arrears"] and disconnect_key not in done:
            wanted.append((Candidate(row["meter_id"], "disconnect", row["protected"]), disconnect_key))
        elif not row["arrears"] and disconnect_key in done and reconnect_key not in done:
            wanted.append((Candidate(row["meter_id"], "reconnect"), reconnect_key))
    return wanted


async def halted_by(conn: asyncpg.Connection) -> str | None:
    """The cap rule that halted automatic disconnection, or None; it stays until ``resume``."""
    return await conn.fetchval("SELECT value FROM headend_settings WHERE key = $1", HALT_KEY)


async def resume(conn: asyncpg.Connection, operator: str, reason: str) -> str | None:
    """Lift a cap halt (audited with the operator and reason); returns the rule lifted, or None."""
    async with conn.transaction():
        rule = await conn.fetchval("DELETE FROM headend_settings WHERE key = $1 RETURNING value", HALT_KEY)
        if rule is not None:
            await audit(
                conn, operator, "automation.resumed", "automation", "arrears", reason, {"halted_by": rule}
            )
    return rule


async def run_once(
    conn: asyncpg.Connection, settings: SafetySettings, now: datetime, *, notice: timedelta = timedelta(0)
) -> RunReport:
    """Update arrears flags and create the commands they call for, all under the safety policy.

    A cap that would be passed halts automatic disconnection and latches: later runs create
    reconnects only until an operator calls ``resume``; ``report.halted`` names the rule."""
    report = RunReport()
    async with conn.transaction():
        await _update_flags(conn, now, notice, report)
        wanted = await _candidates(conn)
        sent_last_hour = await conn.fetchval(
            "SELECT count(*) FROM commands WHERE operator = $1 AND action = 'disconnect' AND created_at > $2",
            SYSTEM,
            now - timedelta(hours=1),
        )
        report.halted = await halted_by(conn)
        if report.halted is not None:  # latched: reconnects only, until an operator resumes
            wanted = [w for w in wanted if w[0].action == "reconnect"]
        try:
            decisions = evaluate_run(settings, [c for c, _ in wanted], now, sent_last_hour)
        except CapExceeded as exc:
            await conn.execute(
                "INSERT INTO headend_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                HALT_KEY,
                exc.rule,
            )
            await _audit(conn, "automation.halted", "automation", "arrears", exc.rule, {"alarm": str(exc)})
            report.halted = exc.rule
            wanted = [w for w in wanted if w[0].action == "reconnect"]
            decisions = evaluate_run(settings, [c for c, _ in wanted], now, sent_last_hour)
        for (candidate, key), decision in zip(wanted, decisions, strict=True):
            if not decision.allowed:
                await _audit(
                    conn,
                    "command.refused",
                    "meter",
                    candidate.meter_id,
                    decision.rule or "",
                    {"action": candidate.action, "reason": decision.reason},
                )
                report.refused.append((candidate.meter_id, decision.rule or ""))
                continue
            if candidate.action == "reconnect":
                await conn.execute(
                    "UPDATE commands SET state = 'cancelled', last_error = 'arrears cleared' "
                    "WHERE meter_id = $1 AND action = 'disconnect' AND state = 'pending'",
                    candidate.meter_id,
                )
            cause = "arrears" if candidate.action == "disconnect" else "payment"
            report.commands.append(
                await create_command(
                    conn,
                    meter_id=candidate.meter_id,
                    action=candidate.action,
                    cause=cause,
                    operator=SYSTEM,
                    idempotency_key=key,
                    now=now,
                    requires_approval=decision.needs_approval,
                    dry_run=decision.dry_run,
                )
            )
    return report
