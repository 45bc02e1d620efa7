"""Payments: recorded once per reference, credited to the ledger and balance, audited."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import asyncpg

from headend.billing.settlement import settle_bills
from headend.store import billing as store
from headend.store.accounts import account_ref
from headend.store.audit import audit
from headend.store.payment_refs import payment_by_reference

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("1e12")  # numeric(14, 2)


class PaymentError(ValueError):
    """A payment that cannot be recorded (unknown account, bad amount, bad CSV row)."""


@dataclass(frozen=True)
class PaymentOutcome:
    """``recorded`` is False when the reference was already paid (nothing changed)."""

    account: str
    reference: str
    recorded: bool
    balance: Decimal


MAX_REFERENCE = 200  # characters of a payment reference (a bank or counter transaction id)


def check_reference(reference: str) -> str:
    """A payment reference: 1..MAX_REFERENCE printable characters."""
    if not reference.strip() or len(reference) > MAX_REFERENCE or not reference.isprintable():
        raise PaymentError(
            f"a payment reference has at most {MAX_REFERENCE} printable characters, not empty;"
            f" got {len(reference)} characters"
        )
    return reference


def parse_amount(text: str) -> Decimal:
    """A positive money amount with at most two decimals, from text (never via float)."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise PaymentError(f"amount {text!r} is not a number") from None
    if not amount.is_finite() or not 0 < amount < MAX_AMOUNT or amount != amount.quantize(CENT):
        raise PaymentError(f"amount {text!r} must be positive, below {MAX_AMOUNT}, with at most two decimals")
    return amount


async def record_payment(
    conn: asyncpg.Connection,
    account: str,
    amount: Decimal,
    reference: str,
    *,
    operator: str,
    source: str = "cli",
    paid_at: datetime | None = None,
) -> PaymentOutcome:
    """Record a payment idempotently on ``reference``; credits the balance, settles a postpaid account's
    bills oldest first (which clears its arrears) and audits the change."""
    async with conn.transaction():
        acc = await account_ref(conn, account)
        if acc is None:
            raise PaymentError(f"unknown account {account!r}")
        paid = await store.insert_payment(conn, acc["id"], amount, reference, source, operator, paid_at)
        if paid is None:
            first = await payment_by_reference(conn, reference)
            if first is not None and (first.account, first.amount) != (account, amount):
                raise PaymentError(
                    f"reference {reference!r} is already recorded as {first.amount} to account"
                    f" {first.account!r}; a different payment needs its own reference"
                )
        else:
            details = json.dumps({"payment_id": paid})
            await store.insert_ledger(conn, acc["id"], "payment", amount, f"payment:{reference}", details)
            await store.add_to_balance(conn, acc["id"], amount)
            if acc["kind"] == "postpaid":
                await settle_bills(conn, acc["id"], paid_at or datetime.now(UTC))
            await audit(
                conn,
                operator,
                "payment.recorded",
                "account",
                account,
                reference,
                {"amount": str(amount), "source": source},
            )
        balance = await store.balance_of(conn, acc["id"])
    return PaymentOutcome(account, reference, paid is not None, balance)


async def import_csv(
    conn: asyncpg.Connection, text: str, *, operator: str, source: str
) -> list[PaymentOutcome]:
    """Import a payment file (columns account,amount,reference); every row is checked before any is stored."""
    rows = list(csv.DictReader(io.StringIO(text)))
    parsed: list[tuple[str, Decimal, str]] = []
    for line, row in enumerate(rows, start=2):
        try:
            reference = check_reference(row["reference"].strip())
            parsed.append((row["account"].strip(), parse_amount(row["amount"]), reference))
        except (KeyError, AttributeError):
            raise PaymentError(f"line {line}: columns account,amount,reference are required") from None
        except PaymentError as exc:
            raise PaymentError(f"line {line}: {exc}") from None
    async with conn.transaction():
        return [
            await record_payment(conn, account, amount, ref, operator=operator, source=source)
            for account, amount, ref in parsed
        ]
