"""Each pass of the campaign runner takes every bus's share of the due meters (at most ``pace`` of
each), however many meters other buses have due: a large campaign keeps all its buses busy."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from headend.store import campaigns
from headend.store.param_sets import add_version


async def test_due_meters_are_taken_per_bus(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)  # the owner: no sign-in, the guards let the owner through
    try:
        ids = []
        for bus in range(3):
            channel = await conn.fetchval(
                "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', $2) RETURNING id",
                f"bus{bus}",
                f"127.0.0.1:{bus + 1}",
            )
            count = 250 if bus == 0 else 3  # bus 0 alone has more meters due than a batch of 200
            found = await conn.fetch(
                "INSERT INTO meters (protocol, address, model, channel_id)"
                " SELECT 'dlt645-2007', lpad($1, 6, '0') || lpad(n::text, 6, '0'), 'm', $2"
                " FROM generate_series(1, $3) n RETURNING id",
                str(bus),
                channel,
                count,
            )
            ids += [r["id"] for r in found]
        definition = {"seasons": [{"start": "01-01", "table": 1}],
                      "daily_tables": [[{"start": "00:00", "tariff": 1}]]}  # fmt: skip
        await add_version(conn, "s", definition, "owner", None)
        set_id = await conn.fetchval("SELECT id FROM tou_parameter_sets")
        campaign = await campaigns.create(
            conn, "c", set_id, datetime(2027, 1, 1, tzinfo=UTC), 3, "a", [(i, None) for i in ids]
        )
        await campaigns.approve(conn, campaign, "b")
        await campaigns.move(conn, campaign, "running")
        due = await campaigns.due_meters(conn, 2)
        per_bus: dict[int, int] = {}
        for d in due:
            per_bus[d["channel_id"]] = per_bus.get(d["channel_id"], 0) + 1
        assert sorted(per_bus.values()) == [2, 2, 2]
    finally:
        await conn.close()
