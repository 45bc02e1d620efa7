"""The arrears rule: prepaid below the credit limit, postpaid overdue past the grace period, at least a
minimum amount owed, notice first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal


@dataclass(frozen=True)
class AccountPosition:
    """What the rule needs to know about one account (``unpaid``: the postpaid amount on unpaid bills)."""

    kind: str  # prepaid | postpaid
    balance: Decimal
    credit_limit: Decimal
    grace_days: int
    oldest_unpaid_due: datetime | None
    notice_sent_at: datetime | None
    unpaid: Decimal | None = None


def in_debt(position: AccountPosition, now: datetime, minimum: Decimal = Decimal(0)) -> bool:
    """Whether the account owes money under its kind's rule (before any notice period): never for less
    than ``minimum``."""
    if position.kind == "prepaid":
        return position.balance < -position.credit_limit and -position.balance >= minimum
    due = position.oldest_unpaid_due
    if position.unpaid is not None and position.unpaid < minimum:
        return False
    return due is not None and now > due + timedelta(days=position.grace_days)


def arrears_state(
    position: AccountPosition, now: datetime, notice_period: timedelta, minimum: Decimal = Decimal(0)
) -> str:
    """'clear', 'notice' (send a warning first), 'waiting' (notice period running) or 'arrears'."""
    if not in_debt(position, now, minimum):
        return "clear"
    if notice_period > timedelta(0):
        if position.notice_sent_at is None:
            return "notice"
        if now < position.notice_sent_at + notice_period:
            return "waiting"
    return "arrears"
