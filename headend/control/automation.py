"""One automatic fee-control run: update arrears flags, then create disconnect/reconnect commands through
the safety policy. Each account and meter is handled on its own (a savepoint): a failure is counted,
logged and reported, and the rest of the run goes on. Refusals and halts are audited when they start or
change, not on every run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from headend.billing.arrears import AccountPosition, arrears_state
from headend.control.safety import Candidate, CapExceeded, Decision, SafetySettings, evaluate_run
from headend.store import feecontrol as store
from headend.store.audit import audit
from headend.store.commands import create_command
from headend.store.feecontrol import HALT_KEY
from headend.vocabulary import ALARM_ACTIONS, ReconnectMode

SYSTEM = "system"
RESTORING = ("reconnect", "alarm_release")  # never held by a halt, a window, protection or a hold
CAUSES = {"disconnect": "arrears", "reconnect": "payment", "alarm": "notice", "alarm_release": "notice_over"}
__all__ = ["HALT_KEY", "SYSTEM", "RunReport", "halted_by", "resume", "run_once"]

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What one run did; ``failures`` are (stage, account or meter, error) the run went past."""

    flagged: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    halted: str | None = None


class CommandConflict(RuntimeError):
    """The meter already has an open command: this one waits for the next run."""


@dataclass(frozen=True)
class Wanted:
    """A command automation wants: the candidate, its idempotency key and the reconnect mode."""

    candidate: Candidate
    key: str
    dry_run_key: str
    mode: ReconnectMode = "close"


async def _audit(
    conn: asyncpg.Connection, action: str, entity: str, entity_id: Any, reason: str, details: dict[str, Any]
) -> None:
    await audit(conn, SYSTEM, action, entity, entity_id, reason, details)


async def _update_flag(
    conn: asyncpg.Connection,
    acc: asyncpg.Record,
    now: datetime,
    notice: timedelta,
    minimum: Decimal,
    report: RunReport,
) -> None:
    position = AccountPosition(
        acc["kind"],
        Decimal(acc["balance"]),
        Decimal(acc["credit_limit"]),
        acc["grace_days"],
        acc["oldest_unpaid_due"],
        acc["notice_sent_at"],
        None if acc["unpaid"] is None else Decimal(acc["unpaid"]),
    )
    state = arrears_state(position, now, notice, minimum)
    evidence = {"balance": str(acc["balance"]), "oldest_unpaid_due": acc["oldest_unpaid_due"]}
    if state == "notice":
        await store.set_notice(conn, acc["id"], now)
        await _audit(conn, "account.notice", "account", acc["number"], "arrears warning", evidence)
        report.notices.append(acc["number"])
    elif state == "arrears" and not acc["arrears"]:
        await store.flag_arrears(conn, acc["id"], now)
        await _audit(conn, "account.arrears_flagged", "account", acc["number"], "arrears", evidence)
        report.flagged.append(acc["number"])
    elif state == "clear" and (acc["arrears"] or acc["notice_sent_at"] is not None):
        await store.clear_arrears(conn, acc["id"])
        await _audit(conn, "account.arrears_cleared", "account", acc["number"], "paid", evidence)
        report.cleared.append(acc["number"])


async def _update_flags(
    conn: asyncpg.Connection, now: datetime, notice: timedelta, minimum: Decimal, report: RunReport
) -> None:
    for acc in await store.account_positions(conn):
        try:
            async with conn.transaction():
                await _update_flag(conn, acc, now, notice, minimum, report)
        except (asyncpg.PostgresError, ArithmeticError) as exc:
            report.failures.append(("flags", acc["number"], f"{type(exc).__name__}: {exc}"))


def alarm_wanted(settings: SafetySettings, override: bool | None) -> bool:
    """Whether an account is warned by its meters' pre-trip alarm before a cut (its own setting, else
    the policy)."""
    return settings.alarm_before_cut if override is None else override


def _unwarned(row: asyncpg.Record, settings: SafetySettings, now: datetime) -> str | None:
    """Why the meter's pre-trip alarm does not allow its automatic disconnect yet (None: it does, or the
    account asks for no alarm, or the meter has none: only DL/T 645-2007 meters sound one)."""
    if row["protocol"] != "dlt645-2007" or not alarm_wanted(settings, row["alarm_before_cut"]):
        return None
    if row["warned_action"] != "alarm" or row["warned_at"] is None:
        return "no confirmed pre-trip alarm on the meter yet"
    if row["warned_at"] + settings.notice > now:
        return f"the pre-trip alarm confirmed at {row['warned_at'].isoformat()} sounds a notice period first"
    return None


async def _candidates(conn: asyncpg.Connection, settings: SafetySettings, now: datetime) -> list[Wanted]:
    """Meters with a relay that need a command in their arrears episode (one disconnect, one reconnect
    per episode; a dry run has keys of its own so it leaves the episode open). A paid episode whose
    disconnect never went out gets no reconnect: its pending disconnect is cancelled instead."""
    wanted: list[Wanted] = []
    for row in await store.episode_meters(conn):
        episode = f"{row['acc']}:{row['meter_id']}:{row['arrears_since'].isoformat()}"
        disconnect_key, reconnect_key = f"arrears:{episode}", f"paid:{episode}"
        dry_disconnect, dry_reconnect = f"dryrun:{disconnect_key}", f"dryrun:{reconnect_key}"
        done = await store.existing_keys(conn, [disconnect_key, reconnect_key, dry_disconnect, dry_reconnect])
        # Modbus relays have no close-allowed: they are closed directly
        mode = "close" if row["protocol"] == "modbus" else row["reconnect_mode"] or settings.reconnect_mode
        if row["arrears"] and disconnect_key not in done:
            if settings.dry_run and dry_disconnect in done:
                continue
            unwarned = None if settings.dry_run else _unwarned(row, settings, now)
            candidate = Candidate(row["meter_id"], "disconnect", row["protected"], row["hold"], unwarned)
            wanted.append(Wanted(candidate, disconnect_key, dry_disconnect))
        elif not row["arrears"] and disconnect_key in done and reconnect_key not in done:
            if done[disconnect_key] == 0:  # the disconnect never went out: nothing to close again
                await store.cancel_unsent(conn, disconnect_key)
                continue
            if settings.dry_run and dry_reconnect in done:
                continue
            wanted.append(Wanted(Candidate(row["meter_id"], "reconnect"), reconnect_key, dry_reconnect, mode))
    return wanted + await _alarm_candidates(conn, settings)


async def _alarm_candidates(conn: asyncpg.Connection, settings: SafetySettings) -> list[Wanted]:
    """Pre-trip alarms (one per notice episode of an account asking for them; none in a dry run) and
    their releases: once the account is out of its notice period (paid), or the meter was cut and
    restored since the alarm, or it is on another account. An alarm that never went out is cancelled
    instead of released; an operator's alarm is left to operators."""
    wanted: list[Wanted] = []
    for row in await store.alarm_meters(conn):
        meter = row["meter_id"]
        key = None
        if row["notice_sent_at"] is not None and alarm_wanted(settings, row["alarm_before_cut"]):
            key = f"alarm:{row['acc']}:{meter}:{row['notice_sent_at'].isoformat()}"
        ours = row["last_action"] == "alarm" and row["last_cause"] == "notice"  # an operator's stays theirs
        if ours and (key != row["last_key"] or row["restored_since"]):
            if row["last_attempts"] == 0:  # never went out: nothing sounds
                await store.cancel_unsent(conn, row["last_key"])
            elif row["last_state"] not in ("pending", "sent"):
                release = f"alarm_release:{row['last_id']}"
                wanted.append(Wanted(Candidate(meter, "alarm_release"), release, f"dryrun:{release}"))
            continue
        if key is None or settings.dry_run or (row["last_key"] == key and row["last_action"] == "alarm"):
            continue
        if row["last_action"] == "alarm_release" and row["last_state"] in ("pending", "sent"):
            continue  # the previous alarm is still being released
        if (await store.existing_keys(conn, [key])).get(key) is not None:
            continue  # this episode's alarm was sounded and released already (the meter was restored)
        if row["protected"] or row["hold"] is not None:
            continue  # never cut while so: the disconnect's refusal says why, once
        wanted.append(Wanted(Candidate(meter, "alarm"), key, f"dryrun:{key}"))
    return wanted


async def halted_by(conn: asyncpg.Connection) -> str | None:
    """The cap rule that halted automatic disconnection, or None; it stays until ``resume``."""
    return await store.halted_by(conn)


async def resume(conn: asyncpg.Connection, operator: str, reason: str) -> str | None:
    """Lift a cap halt (audited with the operator and reason); returns the rule lifted, or None."""
    async with conn.transaction():
        rule = await store.lift_halt(conn)
        if rule is not None:
            await audit(
                conn, operator, "automation.resumed", "automation", "arrears", reason, {"halted_by": rule}
            )
    return rule


async def _refuse(
    conn: asyncpg.Connection,
    wanted: Wanted,
    decision: Decision,
    known: dict[int, tuple[str, str]],
    now: datetime,
    report: RunReport,
) -> None:
    """Record a refusal; audited only when it is new for the meter or its rule changed."""
    meter_id, rule = wanted.candidate.meter_id, decision.rule or ""
    report.refused.append((meter_id, rule))
    if known.get(meter_id) == (wanted.candidate.action, rule):
        return
    await store.set_refusal(conn, meter_id, wanted.candidate.action, rule, now)
    await _audit(
        conn,
        "command.refused",
        "meter",
        meter_id,
        rule,
        {"action": wanted.candidate.action, "reason": decision.reason},
    )


async def _create(conn: asyncpg.Connection, wanted: Wanted, decision: Decision, now: datetime) -> int | None:
    """Create the wanted command; None for an alarm-kind one whose meter has another command open (it
    waits for the next run, quietly: an alarm follows a reconnect, a disconnect follows its alarm)."""
    candidate = wanted.candidate
    if candidate.action == "reconnect":
        await store.cancel_pending_disconnects(conn, candidate.meter_id)
    busy = await store.open_command(conn, candidate.meter_id)
    if busy is not None:
        if candidate.action in ALARM_ACTIONS:
            return None
        raise CommandConflict(
            f"meter {candidate.meter_id} has open command {busy['id']} ({busy['action']}, {busy['cause']});"
            f" the {candidate.action} waits for it"
        )
    command_id = await create_command(
        conn,
        meter_id=candidate.meter_id,
        action=candidate.action,
        cause=CAUSES[candidate.action],
        operator=SYSTEM,
        idempotency_key=wanted.dry_run_key if decision.dry_run else wanted.key,
        now=now,
        requires_approval=decision.needs_approval,
        dry_run=decision.dry_run,
        reconnect_mode=wanted.mode,
    )
    return command_id


async def run_once(
    conn: asyncpg.Connection,
    settings: SafetySettings,
    now: datetime,
    *,
    notice: timedelta = timedelta(0),
    minimum: Decimal = Decimal(0),
) -> RunReport:
    """Update arrears flags (never for less than ``minimum`` owed, warning ``notice`` ahead) and create
    the commands they call for, all under the safety policy.

    A cap that would be passed halts automatic disconnection and latches: later runs create
    reconnects only until an operator calls ``resume``; ``report.halted`` names the rule."""
    report = RunReport()
    async with conn.transaction():
        await _update_flags(conn, now, notice, minimum, report)
        wanted = await _candidates(conn, settings, now)
        sent_last_hour = await store.disconnects_since(conn, SYSTEM, now - timedelta(hours=1))
        report.halted = await halted_by(conn)
        if report.halted is not None:  # latched: reconnects only, until an operator resumes
            wanted = [w for w in wanted if w.candidate.action in RESTORING]
        try:
            decisions = evaluate_run(settings, [w.candidate for w in wanted], now, sent_last_hour)
        except CapExceeded as exc:
            await store.latch_halt(conn, exc.rule)
            await _audit(conn, "automation.halted", "automation", "arrears", exc.rule, {"alarm": str(exc)})
            report.halted = exc.rule
            wanted = [w for w in wanted if w.candidate.action in RESTORING]
            decisions = evaluate_run(settings, [w.candidate for w in wanted], now, sent_last_hour)
        known = await store.refusals(conn)
        for item, decision in zip(wanted, decisions, strict=True):
            try:
                async with conn.transaction():
                    if not decision.allowed:
                        await _refuse(conn, item, decision, known, now, report)
                        continue
                    created = await _create(conn, item, decision, now)
                    if created is not None:
                        report.commands.append(created)
            except (CommandConflict, asyncpg.PostgresError) as exc:
                report.failures.append(("command", str(item.candidate.meter_id), str(exc)))
        refused_now = {meter for meter, _ in report.refused}
        await store.drop_refusals(conn, [m for m in known if m not in refused_now])
    for stage, entity, error in report.failures:
        log.warning("fee control: %s %s skipped: %s", stage, entity, error)
    return report
