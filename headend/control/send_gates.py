"""The gates a relay command passes when its frame is about to go out, not only when it was made.

Judged on :class:`~headend.store.send_gates.SendFacts` read in the transaction that moves the
command to ``sent``. A command that fails a gate either waits (approval, quiet windows, caps, a
halt: it goes out once they allow it) or is refused with the rule (it is cancelled, never sent).

Every command: approval, a meter that is enabled and has a relay, still on the account it was made for
(``unassigned``). Every disconnect: not protected (保电). Automatic disconnects (cause ``arrears``)
also: no VEE hold, still in arrears (``paid``), outside the quiet windows, under the hourly cap and
not halted. Reconnects are never held by protection, holds, windows or caps.
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


def _still_in_arrears(facts: SendFacts, now: datetime, settings: SafetySettings) -> bool:
    account = facts.account
    if account is None or not account.arrears:
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


def check_send(facts: SendFacts, settings: SafetySettings, now: datetime) -> GateOutcome:
    """Whether the command's frame may go out at ``now`` (local time of the safety time zone)."""
    if facts.requires_approval and facts.approved_by is None:
        return GateOutcome("wait", "approval", "waiting for a second operator's approval")
    if not facts.has_relay or not facts.enabled:
        return GateOutcome("refuse", "meter", "the meter is disabled or has no relay")
    if facts.made_for != facts.assigned_to:
        reason = f"the meter left account {facts.made_for} since the command was made"
        return GateOutcome("refuse", "unassigned", reason)
    if facts.action != "disconnect":
        return SEND
    protection = _protection(facts)
    if protection is not None:
        return GateOutcome("refuse", "protected", f"protected ({protection})")
    if facts.cause != "arrears":
        return SEND
    if facts.hold is not None:
        return GateOutcome("refuse", "hold.suspect_data", f"billing data held: {facts.hold}")
    if not _still_in_arrears(facts, now, settings):
        return GateOutcome("refuse", "paid", "the account is no longer in arrears")
    window = window_rule(settings, now)
    if window is not None:
        return GateOutcome("wait", window, f"automatic disconnection not allowed now ({window})")
    if facts.halted_by is not None:
        return GateOutcome("wait", facts.halted_by, "automatic disconnection is halted")
    if facts.automatic_sent_last_hour >= settings.max_per_hour:
        reason = f"{settings.max_per_hour} automatic disconnects went out in the last hour"
        return GateOutcome("wait", "cap.per_hour", reason)
    return SEND
