"""The console's operator administration against ``headend web`` on the test database: an admin
adds an operator (a blank password is generated and shown once), the new operator signs in with it,
is disabled (then refused) and enabled again, and gets a password set by the admin; others see none of it."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import httpx

from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.web import csrf_of, running_console, sign_in, signed_in


async def _seed(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="viewer", o6="admin")
    finally:
        await conn.close()


def test_an_admin_adds_disables_and_resets_an_operator(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        admin = signed_in(url, "6")
        form = {"id": "42", "name": "Wang", "roles": "viewer,cashier", "csrf": csrf_of(admin)}
        added = admin.post("/operators", data=form)
        assert added.status_code == 200, added.text[:300]
        found = re.search(r'<code id="new-password">([^<]+)</code>', added.text)
        assert found, added.text[:500]
        generated = found.group(1)
        assert generated not in admin.get("/operators").text  # shown once
        assert signed_in(url, "42", generated).get("/api/me").json()["roles"] == ["viewer", "cashier"]
        again = admin.post("/operators", data=form)
        assert again.status_code == 409 and "exists already" in again.text

        headers = {"x-csrf-token": csrf_of(admin)}
        off = admin.post(
            "/api/operators/42/active", json={"active": False, "reason": "left"}, headers=headers
        )
        assert off.status_code == 200, off.text
        refused = sign_in(httpx.Client(base_url=url), "42", generated)
        assert refused.status_code == 401
        listed = {o["id"]: o for o in admin.get("/api/operators").json()}
        assert listed["42"]["active"] is False and listed["42"]["roles"] == ["viewer", "cashier"]
        on = admin.post("/api/operators/42/active", json={"active": True, "reason": "back"}, headers=headers)
        assert on.status_code == 200
        reset = admin.post("/api/operators/42/password", json={"password": "chosen-pass-42"}, headers=headers)
        assert reset.json() == {"id": "42", "password": None}
        assert signed_in(url, "42", "chosen-pass-42").get("/api/me").status_code == 200
        short = admin.post("/api/operators/42/password", json={"password": "x"}, headers=headers)
        assert short.status_code == 409 and "at least" in short.json()["detail"]
        nobody = admin.post("/api/operators/99/password", json={}, headers=headers)
        assert nobody.status_code == 409 and nobody.json()["detail"] == "no operator 99"
        assert 'id="nav-operators"' in admin.get("/").text

        viewer = signed_in(url, "1")
        assert viewer.get("/operators").status_code == 403
        assert viewer.get("/api/operators").status_code == 403
        assert 'id="nav-operators"' not in viewer.get("/").text

    async def audited() -> list[str]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT action FROM audit_log WHERE entity_id = '42' AND action NOT LIKE 'operator.web_%'"
                " ORDER BY id"
            )
            return [r[0] for r in rows]
        finally:
            await conn.close()

    assert run_sync(audited) == [  # audited by the database
        "operator.added",
        "operator.disabled",
        "operator.enabled",
        "operator.password_changed",
    ]
