"""Relay reconciliation: each relay as last metered against what the command log says it should be.

A relay in another state (a field switch, the meter's own trip, tampering) raises an alarm once per
mismatch (audit row ``relay.mismatch``, error log, gauge ``headend_relay_mismatches``). With
``[safety] reconnect_on_mismatch``, a relay found open on an account not in arrears and not held is
closed again by a persisted command (cause ``reconcile``), confirmed by read-back like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from headend.store import feecontrol as store
from headend.store.audit import audit
from headend.store.commands import create_command
from headend.vocabulary import ReconnectMode

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """Mismatches found this pass (new ones alarmed), cleared, and reconnects created."""

    mismatched: list[int] = field(default_factory=list)
    alarmed: list[int] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)
    reconnects: list[int] = field(default_factory=list)


def expected_open(action: str | None, mode: str | None, observed_open: bool) -> bool:
    """Where the relay should be after the last confirmed command (closed when there was none); after
    a close-allowed reconnect either state is right (the customer may not have pressed the button)."""
    if action == "disconnect":
        return True
    if action == "reconnect" and mode == "close_allowed":
        return observed_open
    return False


def _reconnect_mode(row: asyncpg.Record) -> ReconnectMode:
    """The account's reconnect mode; Modbus relays have no close-allowed and are closed directly."""
    return (
        "close_allowed"
        if row["reconnect_mode"] == "close_allowed" and row["protocol"] != "modbus"
        else "close"
    )


async def reconcile(
    conn: asyncpg.Connection, now: datetime, *, reconnect_paying: bool = False
) -> ReconcileReport:
    """Compare every relay meter without an open command with its command log (see the module doc)."""
    report = ReconcileReport()
    for row in await store.relay_observations(conn):
        if row["finished_at"] is not None and row["observed_at"] < row["finished_at"]:
            continue  # the reading predates the last command: nothing to compare yet
        observed = row["relay_closed"] < 0.5
        expected = expected_open(row["action"], row["command_mode"], observed)
        meter_id = row["meter_id"]
        if observed == expected:
            if row["known_expected"] is not None:
                await store.clear_mismatch(conn, meter_id)
                await audit(
                    conn, "system", "relay.mismatch_cleared", "meter", meter_id, "relay as expected", {}
                )
                report.cleared.append(meter_id)
            continue
        report.mismatched.append(meter_id)
        if (row["known_expected"], row["known_observed"]) != (expected, observed):
            details = {
                "expected_open": expected,
                "observed_open": observed,
                "observed_at": row["observed_at"],
            }
            await store.record_mismatch(conn, meter_id, expected, observed, row["observed_at"])
            await audit(
                conn, "system", "relay.mismatch", "meter", meter_id, "relay not as commanded", details
            )
            log.error(
                "relay mismatch on meter %s: expected %s, metered %s",
                meter_id,
                "open" if expected else "closed",
                "open" if observed else "closed",
            )
            report.alarmed.append(meter_id)
        paying = row["account_id"] is not None and not row["arrears"] and not row["held"]
        if reconnect_paying and observed and not expected and paying:
            key = f"reconcile:{meter_id}:{row['observed_at'].isoformat()}"
            command_id = await create_command(
                conn,
                meter_id=meter_id,
                action="reconnect",
                cause="reconcile",
                operator="system",
                idempotency_key=key,
                now=now,
                reconnect_mode=_reconnect_mode(row),
            )
            report.reconnects.append(command_id)
    return report
