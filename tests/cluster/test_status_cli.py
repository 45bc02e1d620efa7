"""``headend cluster status`` outside a cluster and on bad input (its view of a running cluster is
checked in test_cluster_daemons.py)."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from tests.support import cli


def test_status_without_members_says_so_and_bad_input_is_one_line(pg_dsn: str) -> None:
    empty = cli.headend("cluster", "status", "--dsn", pg_dsn)
    assert empty.returncode == 0, empty.stderr
    said = "no cluster members: [cluster] is not enabled on any daemon of this database"
    assert empty.stdout.strip() == said
    bad = cli.headend("cluster", "status", "--soon", "-1", "--dsn", pg_dsn)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --soon: between 0 and 86400 s, got -1"
    assert "Traceback" not in bad.stderr


async def test_status_shows_each_members_load_the_elected_one_and_the_moves_of_the_last_hour(
    pg_dsn: str,
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        ids = []
        for name, meters in (("s-1", 2), ("s-2", 3)):
            channel = await conn.fetchval(
                "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:9') RETURNING id",
                name,
            )
            ids.append(channel)
            for n in range(meters):
                await conn.execute(
                    "INSERT INTO meters (channel_id, protocol, address, model)"
                    " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic')",
                    channel,
                    f"{channel}{n}",
                )
        a, b = "h:11:aa", "h:12:bb"
        for member, pid in ((a, 11), (b, 12)):
            await conn.execute("SELECT headend_cluster_renew($1, 'h', $2, interval '1 hour')", member, pid)
        take = "SELECT headend_lease_take($1, $2, interval '1 hour')"
        await conn.execute(take, ids[0], a)
        await conn.execute(take, ids[1], a)
        await conn.execute("SELECT headend_lease_release($1, $2)", ids[1], a)  # a hand-over ...
        await conn.execute(take, ids[1], b)  # ... taken at b's next renewal
        await conn.execute("SELECT headend_lease_seize($1, $2, interval '1 hour')", ids[0], b)  # dial-in
        await conn.execute("SELECT headend_service_take('services', $1, interval '1 hour')", b)
        shown = await asyncio.to_thread(
            cli.headend_in_process, "cluster", "status", "--json", "--dsn", pg_dsn
        )
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        load = {
            m["member"]: (m["channels"], m["meters"], m["moved_in"], m["moved_out"], m["services"])
            for m in status["members"]
        }
        assert load == {a: (0, 0, 0, 2, False), b: (2, 5, 2, 0, True)}
        assert status["services"]["owner"] == b and status["services"]["epoch"] == 1
        moves = [(m["channel"], m["from"], m["to"], m["epoch"], m["reason"]) for m in status["moves"]]
        assert moves == [
            ("s-1", "", a, 1, "first"),
            ("s-2", "", a, 1, "first"),
            ("s-2", a, b, 2, "taken"),
            ("s-1", a, b, 2, "seized"),
        ]
        table = await asyncio.to_thread(cli.headend_in_process, "cluster", "status", "--dsn", pg_dsn)
        assert table.returncode == 0, table.stderr
        assert "lease moves in the last hour:" in table.stdout
        assert "seized" in table.stdout.split("lease moves in the last hour:")[1]
    finally:
        await conn.close()
