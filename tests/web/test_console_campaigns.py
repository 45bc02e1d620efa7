"""The console's parameter-campaign pages against the test database: campaigns made through ``headend
params campaign`` (desk login, two people), meters settled as the daemon records them (its login,
its store calls), read by a viewer as a list with counts by state and as one campaign's meters,
failed first; signed out, the pages send to the sign-in form and the API answers 401."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from headend.store import campaigns
from tests.params.test_param_sets import WINTER
from tests.support.cli import headend_in_process
from tests.support.console_app import console_in_process
from tests.support.logins import daemon_dsn
from tests.support.operators import PASSWORD, add_operators, operator_env
from tests.support.postgres import run_sync
from tests.support.web import sign_in

AT = "2030-01-01T00:00:00+08:00"
ADDRESSES = [f"00000000710{i}" for i in range(1, 8)]
# what the daemon recorded at each meter of c1: (state, attempts, reason); the last two not tried yet
OUTCOMES = {
    ADDRESSES[0]: ("failed", 3, "no answer after 3 attempts"),
    ADDRESSES[1]: ("written", 1, None),
    ADDRESSES[2]: ("verified", 1, None),
    ADDRESSES[3]: ("verified", 2, None),
    ADDRESSES[4]: ("skipped", 1, None),
}


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o7101="operator", o7102="approver", o7103="admin", o7104="viewer")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('line7', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        for n, address in enumerate(ADDRESSES, 1):
            await conn.execute(
                "INSERT INTO meters (protocol, address, model, channel_id, name)"
                " VALUES ('dlt645-2007', $1, 'm', $2, $3)",
                address,
                channel,
                f"flat-{n}",
            )
    finally:
        await conn.close()


def _cli(*args: str) -> None:
    done = headend_in_process(*args, env=operator_env())
    assert done.returncode == 0, (args, done.stderr)


async def _daemon_records(dsn: str) -> None:
    """Attempts and outcomes at c1's meters, through the daemon's login and store calls."""
    conn = await asyncpg.connect(daemon_dsn(dsn))
    try:
        found = await campaigns.campaign(conn, "c1")
        assert found is not None
        ids = {r["address"]: r["meter_id"] for r in await campaigns.campaign_meters(conn, found["id"])}
        for address, (state, attempts, reason) in OUTCOMES.items():
            for _ in range(attempts):
                assert await campaigns.begin_attempt(conn, found["id"], ids[address]) is not None
            await campaigns.record(conn, found["id"], ids[address], state, reason)
    finally:
        await conn.close()


def test_a_viewer_follows_campaign_progress(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    set_file = tmp_path / "w.json"
    set_file.write_text(json.dumps(WINTER))
    dsn = ("--dsn", pg_dsn)
    _cli("params", "set", "add", "w", "--file", str(set_file), "--operator", "7103", *dsn)
    create = ("params", "campaign", "create", "--set", "w", "--switch-at", AT, "--operator", "7101", *dsn)
    _cli(*create, "c0", "--meter", ADDRESSES[0], "--meter", ADDRESSES[1])  # stays a draft
    _cli(*create, "c1", "--channel", "line7")
    _cli("params", "campaign", "approve", "c1", "--operator", "7102", *dsn)
    _cli("params", "campaign", "start", "c1", "--operator", "7101", *dsn)
    run_sync(lambda: _daemon_records(pg_dsn))

    with console_in_process(pg_dsn) as client:
        assert client.get("/api/campaigns").status_code == 401
        assert client.get("/api/campaigns/c1").status_code == 401
        signed_out = client.get("/campaigns")
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/signin")
        assert client.get("/campaigns/c1").headers["location"] == "/signin"

        assert sign_in(client, "7104", PASSWORD).status_code == 303  # a viewer
        listed = client.get("/api/campaigns")
        assert listed.status_code == 200, listed.text
        c1, c0 = listed.json()["campaigns"]  # newest first
        assert (c1["name"], c1["state"], c1["set_name"], c1["set_version"]) == ("c1", "running", "w", 1)
        assert (c1["created_by"], c1["approved_by"], c1["total"], c1["settled"]) == ("7101", "7102", 7, 4)
        assert c1["counts"] == {"pending": 2, "written": 1, "verified": 2, "skipped": 1, "failed": 1}
        assert c1["share"] == 4 / 7
        assert (c0["name"], c0["state"], c0["approved_by"], c0["total"], c0["settled"]) == (
            "c0",
            "draft",
            None,
            2,
            0,
        )
        assert c0["counts"] == {"pending": 2, "written": 0, "verified": 0, "skipped": 0, "failed": 0}

        one = client.get("/api/campaigns/c1").json()
        assert one["campaign"]["counts"] == c1["counts"] and (one["page"], one["pages"]) == (1, 1)
        shown = [(m["address"], m["state"], m["attempts"], m["reason"]) for m in one["meters"]]
        assert shown == [
            (ADDRESSES[0], "failed", 3, "no answer after 3 attempts"),
            (ADDRESSES[1], "written", 1, None),
            (ADDRESSES[5], "pending", 0, None),
            (ADDRESSES[6], "pending", 0, None),
            (ADDRESSES[4], "skipped", 1, None),
            (ADDRESSES[2], "verified", 1, None),
            (ADDRESSES[3], "verified", 2, None),
        ]
        tried = {m["address"]: m["last_attempt_at"] is not None for m in one["meters"]}
        assert tried == {a: a in OUTCOMES for a in ADDRESSES}
        assert {m["channel"] for m in one["meters"]} == {"line7"}
        assert client.get("/api/campaigns/c1", params={"page": 2}).json()["meters"] == []
        assert client.get("/api/campaigns/c1", params={"page": 0}).status_code == 422
        missing = client.get("/api/campaigns/nothing")
        assert (missing.status_code, missing.json()) == (404, {"detail": "no campaign 'nothing'"})

        client.cookies.set("headend_lang", "en")
        page = client.get("/campaigns")
        assert page.status_code == 200 and 'id="nav-campaigns"' in page.text
        assert 'href="/campaigns/c1"' in page.text and "4/7 (57 %)" in page.text and "0/2 (0 %)" in page.text
        bar = (
            'class="p-verified" x="0.00" y="0" width="57.14"',
            'class="p-failed" x="85.71" y="0" width="28.57"',
        )
        assert all(rect in page.text for rect in bar)  # the settled share by state, then the written
        assert "<script" not in page.text and "style=" not in page.text  # nothing the CSP would block
        detail = client.get("/campaigns/c1")
        assert detail.status_code == 200 and "no answer after 3 attempts" in detail.text
        assert detail.text.index(ADDRESSES[0]) < detail.text.index(ADDRESSES[2])  # failed first
        assert client.get("/campaigns/nothing").status_code == 404
        schema = client.get("/api/openapi.json").json()
        assert {"/api/campaigns", "/api/campaigns/{name}"} <= set(schema["paths"])
