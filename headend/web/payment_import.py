"""A payment batch from a billing / CIS system (cashier role): every row recorded once per reference
as ``headend billing pay`` does, each in a transaction of its own, so one refused row (a reference
reused with another amount, an unknown account) leaves the others recorded; a retried batch records
nothing twice. The outcome is given per row."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from headend.billing import payments
from headend.billing.payments import PaymentError, check_reference, parse_amount
from headend.web.data import BadRequest
from headend.web.identity import Forbidden, Principal

MAX_ROWS = 1000
COLUMNS = ("account", "amount", "reference", "paid_at")


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """One row of a batch as sent (checked when it is recorded)."""

    account: str
    amount: str
    reference: str
    paid_at: str | None


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """``recorded`` (new), ``duplicate`` (its reference was recorded before with the same account and
    amount: nothing changed) or ``refused`` (``reason`` says why; nothing changed)."""

    row: int
    account: str
    reference: str
    status: str
    reason: str | None
    balance: str | None


def rows_of_csv(text: str) -> list[PaymentRow]:
    """The rows of a CSV batch with the header ``account,amount,reference[,paid_at]``."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"account", "amount", "reference"} <= set(reader.fieldnames):
        raise BadRequest("a CSV batch needs the header account,amount,reference[,paid_at]")
    found = []
    for line in reader:
        if None in line.values() or None in line:
            raise BadRequest(f"line {reader.line_num}: the row does not have the header's columns")
        found.append(
            PaymentRow(line["account"], line["amount"], line["reference"], line.get("paid_at") or None)
        )
    return found


def _paid_at(text: str | None, zone: ZoneInfo) -> datetime | None:
    """When it was paid: ISO 8601 (a time without an offset is the station's), or None (now)."""
    if text is None or not text.strip():
        return None
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PaymentError(f"paid_at {text[:40]!r} is not an ISO 8601 time") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=zone)


async def record_batch(
    conn: asyncpg.Connection, who: Principal, rows: list[PaymentRow], zone: ZoneInfo
) -> list[RowOutcome]:
    """Record every row under the signed-in operator (cashier role; the database checks it again)."""
    who.require("cashier")
    if not rows:
        raise BadRequest("the batch has no rows")
    if len(rows) > MAX_ROWS:
        raise BadRequest(f"a batch has at most {MAX_ROWS} rows, not {len(rows)}")
    return [await _record(conn, who, n, row, zone) for n, row in enumerate(rows, start=1)]


async def _record(
    conn: asyncpg.Connection, who: Principal, n: int, row: PaymentRow, zone: ZoneInfo
) -> RowOutcome:
    account, reference = row.account.strip(), row.reference.strip()
    try:
        amount = parse_amount(row.amount)
        check_reference(reference)
        done = await payments.record_payment(
            conn,
            account,
            amount,
            reference,
            operator=who.operator_id,
            source="api",
            paid_at=_paid_at(row.paid_at, zone),
        )
    except PaymentError as exc:
        return RowOutcome(n, account, reference, "refused", str(exc), None)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    except asyncpg.PostgresError as exc:  # a bound of the database, said in one line
        return RowOutcome(n, account, reference, "refused", str(exc).splitlines()[0], None)
    status = "recorded" if done.recorded else "duplicate"
    return RowOutcome(n, account, reference, status, None, str(done.balance))
