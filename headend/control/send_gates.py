"""The gates a relay command passes when its frame is about to go out, not only when it was made.

Judged on :class:`~headend.store.send_gates.SendFacts` read in the transaction that moves the
command to ``sent``. A command that fails a gate either waits (approval, quiet windows, caps, a
halt: it goes out once they allow it) or is refused with the rule (it is cancelled, never sent).

Every command: approval, a meter that is enabled and has a relay, still on the account it was made for
(``unassigned``; not for an alarm release: a meter left sounding is silenced whoever it serves now).
Every disconnect and alarm: not protected (保电). Automatic disconnects (cause ``arrears``) also: no VEE
hold, still in arrears (``paid``), a pre-trip alarm confirmed at least the notice period ago where the
account asks for one (``alarm``), outside the quiet windows, under the hourly cap and not halted.
Automatic alarms (cause ``notice``): no hold, still owing (``paid``), the windows, their own hourly cap
and the halt. Reconnects and alarm releases are never held by protection, holds, windows or caps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from headend.billing.arrears import AccountPosition, in_debt
from headend.control.safety import SafetySettings, window_rule
from headend.store.send_gates import SendFacts

Verdict = Literal["send", "wait", "refuse"]


@dataclass(frozen=True)
class GateOutcome:
    """``send``, or ``wait``/``refuse`` by ``rule`` with a reason an operator reads."""

    verdict: Verdict
    rule: str = ""
    reason: str = ""


SEND = GateOutcome("send")


def _still_in_arrears(
    facts: SendFacts, now: datetime, settings: SafetySettings, *, flag: bool = True
) -> bool:
    """Whether the account still owes (``flag``: and is flagged in arrears, past its notice)."""
    account = facts.account
    if account is None or (flag and not account.arrears):
        return False
    position = AccountPosition(
        account.kind,
        account.balance,
        account.credit_limit,
        account.grace_days,
        account.oldest_unpaid_due,
        None,
        account.unpaid,
    )
    return in_debt(position, now, settings.min_arrears)


def _protection(facts: SendFacts) -> str | None:
    """Why the customer is protected (meter or account), or None."""
    account = facts.account
    if facts.meter_protected:
        return facts.meter_protected_reason or "meter protected"
    if account is not None and account.protected:
        return account.protected_reason or "account protected"
    return None


def _unwarned(facts: SendFacts, settings: SafetySettings, now: datetime) -> str | None:
    """Why the pre-trip alarm does not allow an automatic disconnect yet (None: it does, or none is
    asked for, or the meter has none)."""
    account = facts.account
    override = None if account is None else account.alarm_before_cut
    if facts.protocol != "dlt645-2007" or not (settings.alarm_before_cut if override is None else override):
        return None
    if facts.alarm_confirmed_at is None:
        return "no confirmed pre-trip alarm on the meter"
    if facts.alarm_confirmed_at + settings.notice > now:
        since = facts.alarm_confirmed_at.isoformat()
        return f"the pre-trip alarm confirmed at {since} sounds a notice period first"
    return None


def check_send(facts: SendFacts, settings: SafetySettings, now: datetime) -> GateOutcome:
    """Whether the command's frame may go out at ``now`` (local time of the safety time zone)."""
    if facts.requires_approval and facts.approved_by is None:
        return GateOutcome("wait", "approval", "waiting for a second operator's approval")
    if not facts.has_relay or not facts.enabled:
        return GateOutcome("refuse", "meter", "the meter is disabled or has no relay")
    if facts.action == "alarm_release":
        return SEND
    if facts.made_for != facts.assigned_to:
        reason = f"the meter left account {facts.made_for} since the command was made"
        return GateOutcome("refuse", "unassigned", reason)
    if facts.action not in ("disconnect", "alarm"):
        return SEND
    protection = _protection(facts)
    if protection is not None:
        return GateOutcome("refuse", "protected", f"protected ({protection})")
    if facts.action == "alarm":
        return _check_alarm(facts, settings, now)
    if facts.cause != "arrears":
        return SEND
    if facts.hold is not None:
        return GateOutcome("refuse", "hold.suspect_data", f"billing data held: {facts.hold}")
    if not _still_in_arrears(facts, now, settings):
        return GateOutcome("refuse", "paid", "the account is no longer in arrears")
    unwarned = _unwarned(facts, settings, now)
    if unwarned is not None:
        return GateOutcome("wait", "alarm", unwarned)
    return _automatic_limits(facts, settings, now, "disconnect")


def _check_alarm(facts: SendFacts, settings: SafetySettings, now: datetime) -> GateOutcome:
    """An alarm past the gates of every command and protection: an operator's goes out; fee control's
    (cause ``notice``) only for a customer who still owes, with no hold, within the limits."""
    if facts.cause != "notice":
        return SEND
    if facts.hold is not None:
        return GateOutcome("refuse", "hold.suspect_data", f"billing data held: {facts.hold}")
    if not _still_in_arrears(facts, now, settings, flag=False):
        return GateOutcome("refuse", "paid", "the account no longer owes")
    return _automatic_limits(facts, settings, now, "alarm")


def _automatic_limits(facts: SendFacts, settings: SafetySettings, now: datetime, what: str) -> GateOutcome:
    """The quiet windows, the halt and the hourly cap of automatic disconnects (alarms: of alarms)."""
    window = window_rule(settings, now)
    if window is not None:
        return GateOutcome("wait", window, f"automatic {what} not allowed now ({window})")
    if facts.halted_by is not None:
        return GateOutcome("wait", facts.halted_by, "automatic disconnection is halted")
    if facts.automatic_sent_last_hour >= settings.max_per_hour:
        reason = f"{settings.max_per_hour} automatic {what}s went out in the last hour"
        return GateOutcome("wait", "cap.per_hour", reason)
    return SEND
