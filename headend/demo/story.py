"""The demo's fee-control story: a prepaid customer runs out of credit, is cut off, pays, is reconnected.

Nothing here switches a relay itself: the story runs the daemon's billing pass over the stored
readings (``headend.billing.service``), then the fee-control service's pass
(``headend.control.service``), which flags arrears, creates the command under the safety policy, and
executes it on the meter's bus with a read-back of the relay. The payment goes through
``headend.billing.payments`` like a cashier's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from headend.billing.payments import record_payment
from headend.billing.service import bill_due_prepaid
from headend.control.service import run_pass
from headend.store import reports
from headend.store.accounts import create_prepaid_account

TARIFF = "demo-flat"
PRICE_PER_KWH = Decimal("1.00")
OPENING_BALANCE = Decimal("0.20")
PAYMENT = Decimal("100.00")
CASHIER = "demo-cashier"


async def create_story_account(conn: asyncpg.Connection, account: str) -> None:
    """A flat tariff and a prepaid account with a small opening balance (before the inventory import)."""
    await create_prepaid_account(
        conn, account, "Demo customer", tariff=TARIFF, price_per_kwh=PRICE_PER_KWH, opening=OPENING_BALANCE
    )


@dataclass
class StoryState:
    """What the story has reached so far (the dashboard and the summary show it)."""

    balance: Decimal = OPENING_BALANCE
    disconnect: str | None = None  # end state of the disconnect command
    reconnect: str | None = None
    payment_reference: str | None = None
    timeline: list[tuple[datetime, str]] = field(default_factory=list)


class FeeControlStory:
    """Advances the story one ``step`` at a time (call it every few seconds while the daemon runs)."""

    def __init__(self, engine: Any, account: str, *, pay_after_s: float) -> None:
        self.engine = engine
        self.account = account
        self.pay_after_s = pay_after_s
        self.state = StoryState()
        self._disconnected_at: float | None = None

    def _say(self, text: str) -> None:
        self.state.timeline.append((datetime.now(UTC), text))

    async def step(self) -> None:
        """Bill new readings, run one fee-control pass, and pay once the disconnection has been seen."""
        async with self.engine.pool.acquire() as conn:
            await self._bill(conn)
        zone = ZoneInfo(self.engine.config.safety.timezone)
        for command_id, end_state in await run_pass(self.engine, datetime.now(zone)):
            await self._record_outcome(command_id, end_state)
        if self._due_to_pay():
            async with self.engine.pool.acquire() as conn:
                await self._pay(conn)

    async def _bill(self, conn: asyncpg.Connection) -> None:
        for period in await bill_due_prepaid(conn):  # the daemon's billing pass (only this account here)
            if period.account != self.account:
                continue
            if period.amount is None:
                self._say(f"billing deferred: {period.error}")
                continue
            balance = await reports.account_balance(conn, self.account) or Decimal(0)
            self.state.balance = balance
            self._say(f"billed {period.amount:.2f} CNY up to {period.end:%H:%M:%S}; balance {balance:.2f}")

    async def _record_outcome(self, command_id: int, end_state: str) -> None:
        async with self.engine.pool.acquire() as conn:
            action = await reports.command_action(conn, command_id)
        self._say(f"command {command_id} ({action}): {end_state}")
        if action == "disconnect":
            self.state.disconnect = end_state
            if end_state == "confirmed":
                self._disconnected_at = time.monotonic()
        elif action == "reconnect":
            self.state.reconnect = end_state

    def _due_to_pay(self) -> bool:
        return (
            self.state.payment_reference is None
            and self._disconnected_at is not None
            and time.monotonic() - self._disconnected_at >= self.pay_after_s
        )

    async def _pay(self, conn: asyncpg.Connection) -> None:
        reference = f"DEMO-PAY-{int(time.time())}"
        outcome = await record_payment(
            conn, self.account, PAYMENT, reference, operator=CASHIER, source="demo"
        )
        self.state.payment_reference = reference
        self.state.balance = outcome.balance
        self._say(f"payment {PAYMENT:.2f} CNY ({reference}); balance {outcome.balance:.2f}")
