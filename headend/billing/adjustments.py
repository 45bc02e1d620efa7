"""Ledger adjustments (refunds, corrections): signed, with a reason and an operator, once per reference."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import asyncpg

from headend.billing.payments import CENT, MAX_AMOUNT, PaymentError
from headend.billing.settlement import settle_bills
from headend.store import billing as store
from headend.store.accounts import account_ref
from headend.store.audit import audit


def parse_signed_amount(text: str) -> Decimal:
    """A non-zero money amount (credit positive, debit negative) with at most two decimals."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise PaymentError(f"amount {text!r} is not a number") from None
    if not amount.is_finite() or amount == 0 or abs(amount) >= MAX_AMOUNT or amount != amount.quantize(CENT):
        raise PaymentError(f"amount {text!r} must be non-zero, below {MAX_AMOUNT}, with at most two decimals")
    return amount


async def adjust(
    conn: asyncpg.Connection, account: str, amount: Decimal, *, reference: str, reason: str, operator: str
) -> tuple[bool, Decimal]:
    """Adjust an account's balance by ``amount`` (audited); returns (recorded, balance). A credit on a
    postpaid account settles its bills oldest first."""
    if not reason.strip() or not operator.strip():
        raise PaymentError("an adjustment needs a reason and an operator")
    async with conn.transaction():
        acc = await account_ref(conn, account)
        if acc is None:
            raise PaymentError(f"unknown account {account!r}")
        details = json.dumps({"reason": reason, "operator": operator})
        row = await store.insert_ledger(conn, acc["id"], "adjustment", amount, f"adjust:{reference}", details)
        if row is None:
            first = await store.ledger_entry(conn, f"adjust:{reference}")
            if first is not None and (first["account"], first["amount"]) != (account, amount):
                raise PaymentError(
                    f"reference {reference!r} is already recorded as {first['amount']} to account"
                    f" {first['account']!r}; a different adjustment needs its own reference"
                )
        else:
            await store.add_to_balance(conn, acc["id"], amount)
            if acc["kind"] == "postpaid":
                await settle_bills(conn, acc["id"], datetime.now(UTC))
            await audit(
                conn,
                operator,
                "ledger.adjusted",
                "account",
                account,
                reason,
                {"amount": str(amount), "reference": reference},
            )
        balance = await store.balance_of(conn, acc["id"])
    return row is not None, balance
