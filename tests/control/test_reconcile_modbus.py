"""Relay reconciliation picks the reconnect mode the relay has: close-allowed for a DL/T 645 meter on a
close-allowed account, a direct close for a Modbus relay (which has no close-allowed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from headend.control.reconcile import reconcile
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading, assign_from_start

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


async def test_a_paying_customers_open_relay_is_reconnected_in_the_mode_its_meter_has(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await ensure_partitions(conn, NOW - timedelta(days=1), NOW)
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind, reconnect_mode) VALUES ('A', 'prepaid', 'close_allowed')"
            " RETURNING id"
        )
        meters = {}
        for protocol, address, unit in (("dlt645-2007", "000000000001", None), ("modbus", "1", 1)):
            meters[protocol] = await conn.fetchval(
                "INSERT INTO meters (protocol, address, unit_id, model, channel_id, has_relay)"
                " VALUES ($1, $2, $3, 'm', $4, true) RETURNING id",
                protocol,
                address,
                unit,
                channel,
            )
            await assign_from_start(conn, meters[protocol], account)
            await add_reading(conn, meters[protocol], NOW - timedelta(minutes=5), 0.0, quantity="relay")

        report = await reconcile(daemon_conn, NOW, reconnect_paying=True)

        assert sorted(report.alarmed) == sorted(meters.values())
        modes = await conn.fetch("SELECT meter_id, action, reconnect_mode FROM commands ORDER BY meter_id")
        assert {(r["meter_id"], r["action"], r["reconnect_mode"]) for r in modes} == {
            (meters["dlt645-2007"], "reconnect", "close_allowed"),
            (meters["modbus"], "reconnect", "close"),
        }
    finally:
        await conn.close()
