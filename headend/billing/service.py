"""Scheduled billing: validate what was stored, then bill prepaid balances up to the validated readings.

In the daemon: ``[engine] services = ["headend.billing.service:run", ...]``: newly stored energy
readings are validated every ``[billing] validate_every`` (a minute by default), balances billed every
``[billing] run_every``. Each pass checks the meter number of meters not checked for
``[billing] identity_every`` (a different device at the address holds the meter), validates the
energy readings stored since the last pass (headend.billing.vee), then bills every active prepaid
account with a tariff from where its balance was last billed (or its first reading, or the start of
its meter assignment) up to where all its meters are validated. Charges are idempotent per period;
a period with a missing reading or a held meter charges nothing, says why and is retried on the next
pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from headend.billing.charging import BillingError, bill_account
from headend.billing.tariff import TariffError
from headend.billing.vee import check_identities, validate_new
from headend.drivers.base import MeterDriver, NotSupported
from headend.drivers.dlt645 import Dlt645Driver
from headend.services import ServiceHost
from headend.store.billing import due_prepaid
from headend.store.cluster import set_service_fence
from headend.store.vee import count_open_holds
from headend.store.writer import UNAVAILABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BilledPeriod:
    """One account's billing attempt: ``amount`` charged, or ``error`` saying why nothing was."""

    account: str
    start: datetime
    end: datetime
    amount: Decimal | None
    error: str | None = None


async def bill_due_prepaid(conn: asyncpg.Connection) -> list[BilledPeriod]:
    """Validate new readings, then bill every prepaid account's readings since it was last billed."""
    report = await validate_new(conn)
    for meter_id, reason in report.holds:
        log.warning("billing hold", extra={"meter_id": meter_id, "reason": reason})
    periods = []
    for row in await due_prepaid(conn):
        start, end = row["billed_until"] or row["first_ts"], row["last_ts"]
        if not row["every_meter_read"] or start is None or end is None or end <= start:
            continue
        try:
            amount = await bill_account(conn, row["id"], start, end)
        except (BillingError, TariffError) as exc:
            periods.append(BilledPeriod(row["number"], start, end, None, str(exc)))
            continue
        periods.append(BilledPeriod(row["number"], start, end, amount))
    return periods


async def _read_meter_number(driver: MeterDriver) -> str:
    """The DL/T 645 meter number (04 00 04 02); other protocols have no standard one."""
    if not isinstance(driver, Dlt645Driver):
        raise NotSupported("only DL/T 645 meters report a meter number")
    return str(await driver.read_di("04000402"))


def _meter_number(engine: ServiceHost) -> Callable[[int], Awaitable[str]]:
    """Reads a meter's number through its bus worker."""

    async def read(meter_id: int) -> str:
        return str(await engine.control(meter_id, _read_meter_number, exchanges=1))

    return read


async def _fenced(engine: ServiceHost, conn: asyncpg.Connection) -> bool:
    """Whether this daemon runs the pass (the elected one of a cluster, or a lone daemon); in a
    cluster, the connection names the services' lease (the database refuses bills once it moved)."""
    lease = engine.elected()
    if lease is None:
        return False
    if lease != ("", 0):
        await set_service_fence(conn, *lease)
    return True


async def run_pass(engine: ServiceHost) -> list[BilledPeriod]:
    """One scheduled billing pass on the engine's pool, each attempt logged; returns the attempts
    (none on a cluster member that is not the elected one)."""
    async with engine.pool.acquire() as conn:
        if not await _fenced(engine, conn):
            return []
        await validate_new(conn)  # the identity check holds from the last validated reading on
        every = timedelta(seconds=engine.config.billing.identity_every)
        for meter_id, reason in await check_identities(conn, _meter_number(engine), datetime.now(UTC), every):
            log.warning("billing hold", extra={"meter_id": meter_id, "reason": reason})
        periods = await bill_due_prepaid(conn)
        engine.metrics.billing_holds.set(await count_open_holds(conn))
    for period in periods:
        log.log(
            logging.INFO if period.error is None else logging.WARNING,
            "billed" if period.error is None else "billing deferred",
            extra={
                "account": period.account,
                "end": period.end.isoformat(),
                "amount": str(period.amount),
                "error": period.error,
            },
        )
    return periods


async def validate_pass(engine: ServiceHost) -> None:
    """Validate the energy readings stored since the last pass (suspects marked, holds opened)."""
    async with engine.pool.acquire() as conn:
        if not await _fenced(engine, conn):
            return
        report = await validate_new(conn)
        for meter_id, reason in report.holds:
            log.warning("billing hold", extra={"meter_id": meter_id, "reason": reason})
        if report.holds:
            engine.metrics.billing_holds.set(await count_open_holds(conn))


async def run(engine: ServiceHost) -> None:
    """Validate new readings every ``[billing] validate_every`` and run a billing pass every
    ``[billing] run_every`` until the daemon stops; failures are counted. A database outage is said
    once (when it starts), not once per pass, and is not a failed pass."""
    loop = asyncio.get_running_loop()
    billing = engine.config.billing
    waiting = False
    next_bill = loop.time()
    while True:
        billing_due = loop.time() >= next_bill
        try:
            if billing_due:
                next_bill = loop.time() + billing.run_every
                await run_pass(engine)
            else:
                await validate_pass(engine)
            waiting = False
        except UNAVAILABLE as exc:
            if not waiting:
                log.warning("billing waits for the database", extra={"error": f"{type(exc).__name__}: {exc}"})
            waiting = True
        except Exception:
            engine.metrics.failed_passes.labels("billing" if billing_due else "validation").inc()
            log.exception("billing pass failed" if billing_due else "validation pass failed")
        await asyncio.sleep(max(0.0, min(billing.validate_every, next_bill - loop.time())))
