"""The console's audit log against ``headend web`` on the test database: filtered by operator,
action (or a prefix), meter (its own entries and its commands') and local days, and exported whole as
streamed CSV (times in the station's zone, formula-looking cells quoted)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import asyncpg

from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import running_console, signed_in

BULK = 2500  # more than one streamed chunk of CSV


async def _seed(pg_dsn: str) -> tuple[int, int]:
    """A viewer; two meters; a command on flat-1; audit entries about both meters, the command, and
    ``BULK`` billing runs on 2026-11-30 (Asia/Shanghai)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="viewer")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        ids = []
        for address, name in (("000000000001", "flat-1"), ("000000000002", "flat-2")):
            ids.append(
                await conn.fetchval(
                    "INSERT INTO meters (protocol, address, model, channel_id, has_relay, name)"
                    " VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true, $3) RETURNING id",
                    address,
                    channel,
                    name,
                )
            )
        command = await conn.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, expires_at)"
            " VALUES ($1, 'disconnect', 'manual', '5', now() + interval '1 day') RETURNING id",
            ids[0],
        )
        rows = [
            ("2026-12-01T09:00:00+08:00", "5", "command.requested", "command", str(command), "tamper"),
            ("2026-12-01T09:05:00+08:00", "3", "command.approved", "command", str(command), "checked"),
            ("2026-12-01T10:00:00+08:00", "system", "vee.hold", "meter", str(ids[0]), "=HYPERLINK(1)"),
            ("2026-12-02T10:00:00+08:00", "system", "vee.hold", "meter", str(ids[1]), "spike"),
        ]
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, reason)"
            " SELECT '2026-11-30T12:00:00+08:00'::timestamptz + g * interval '1 second', '9', 'billing.run',"
            " 'billing_period', g::text, 'run ' || g FROM generate_series(1, $1) g",
            BULK,
        )
        for at, actor, action, entity, entity_id, reason in rows:
            await conn.execute(
                "INSERT INTO audit_log (at, actor, action, entity, entity_id, reason)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                datetime.fromisoformat(at),
                actor,
                action,
                entity,
                entity_id,
                reason,
            )
        return command, ids[0]
    finally:
        await conn.close()


async def _ids(pg_dsn: str) -> list[int]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]
    finally:
        await conn.close()


def test_the_audit_log_filtered_and_exported(pg_dsn: str, tmp_path: Path) -> None:
    command, _ = run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path, timezone="Asia/Shanghai") as url:
        viewer = signed_in(url, "1")

        def asked(**params: str) -> list[tuple[str, str, str | None]]:
            found = viewer.get("/api/audit", params=params)
            assert found.status_code == 200, found.text
            return [(e["actor"], e["action"], e["reason"]) for e in found.json()["entries"]]

        assert asked(meter="flat-1") == [
            ("system", "vee.hold", "=HYPERLINK(1)"),
            ("3", "command.approved", "checked"),
            ("5", "command.requested", "tamper"),
            ("5", "command.pending", "manual"),  # the database's own entry of the insert
        ]
        assert asked(action="command.") == [
            ("3", "command.approved", "checked"),
            ("5", "command.requested", "tamper"),
            ("5", "command.pending", "manual"),
        ]
        assert asked(operator="5", action="command.requested") == [("5", "command.requested", "tamper")]
        assert asked(action="vee.hold", **{"from": "2026-12-02", "to": "2026-12-02"}) == [
            ("system", "vee.hold", "spike")
        ]
        assert len(asked(action="billing.run", limit="1000")) == 1000
        assert viewer.get("/api/audit", params={"meter": "nobody"}).status_code == 404
        assert viewer.get("/api/audit", params={"from": "2026-12-02", "to": "2026-12-01"}).status_code == 400
        assert viewer.get("/api/audit", params={"from": "12/01/2026"}).status_code == 400

        page = viewer.get("/audit", params={"meter": "flat-1"})
        assert page.status_code == 200 and f'href="/commands/{command}"' in page.text
        assert 'href="/audit.csv?meter=flat-1"' in page.text and 'id="nav-audit"' in page.text

        with viewer.stream("GET", "/audit.csv") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            chunks = list(response.iter_text())
        lines = list(csv.reader(io.StringIO("".join(chunks))))
        assert lines[0] == ["id", "at", "actor", "action", "entity", "entity_id", "reason", "details"]
        assert [int(line[0]) for line in lines[1:]] == run_sync(lambda: _ids(pg_dsn))  # every entry, in order
        runs = [line for line in lines if line[3] == "billing.run"]
        assert len(runs) == BULK and runs[0][1:3] == ["2026-11-30T12:00:01+08:00", "9"]
        seeded = [
            line[6] for line in lines if line[3] in ("command.requested", "command.approved", "vee.hold")
        ]
        assert seeded == ["tamper", "checked", "'=HYPERLINK(1)", "spike"]
        one = viewer.get("/audit.csv", params={"meter": "flat-1", "action": "vee."})
        assert list(csv.reader(io.StringIO(one.text)))[1][2:4] == ["system", "vee.hold"]
        assert "/api/audit" in viewer.get("/api/openapi.json").json()["paths"]
        viewer.cookies.clear()
        assert viewer.get("/audit.csv").headers["location"] == "/signin"  # signed-in only
