"""`headend operators` and two-person approval as real processes against PostgreSQL."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.support import cli
from tests.support.cli import headend_prompted
from tests.support.operators import PASSWORD, add_operators, operator_env


def headend(
    dsn: str, *args: str, password: str = PASSWORD, new: str | None = None, token: str | None = None
) -> cli.CliResult:
    """The CLI as a process, signed in with ``password``, or with ``token`` as a script (no password)."""
    env = operator_env(password)
    if new is not None:
        env["HEADEND_NEW_OPERATOR_PASSWORD"] = new
    if token is not None:
        del env["HEADEND_OPERATOR_PASSWORD"]
        env["HEADEND_OPERATOR_TOKEN"] = token
    return cli.headend(*args, "--dsn", dsn, env=env)


@pytest.mark.long(seconds=40)
async def test_bootstrap_add_list_passwd_disable(pg_dsn: str) -> None:
    admin_pw, ops_pw = "first-admin-pw", "operator-pw-2"
    not_admin = headend(
        pg_dsn, "operators", "add", "1", "--name", "A", "--roles", "cashier", "--bootstrap", new=admin_pw
    )
    assert not_admin.returncode == 1 and "must hold the admin role" in not_admin.stderr
    first = headend(
        pg_dsn, "operators", "add", "1", "--name", "Wang Li", "--roles", "admin", "--bootstrap", new=admin_pw
    )
    assert first.returncode == 0, first.stderr
    again = headend(
        pg_dsn, "operators", "add", "9", "--name", "X", "--roles", "admin", "--bootstrap", new=admin_pw
    )
    assert again.returncode == 1 and "--bootstrap only creates the first admin" in again.stderr
    for bad_id, why in (("", "is required"), ("abc", "1-8 digits"), ("123456789", "1-8 digits")):
        refused = headend(
            pg_dsn,
            "operators",
            "add",
            bad_id,
            "--name",
            "X",
            "--roles",
            "viewer",
            "--operator",
            "1",
            password=admin_pw,
            new=ops_pw,
        )
        assert refused.returncode == 1 and why in refused.stderr
    bad_roles = headend(
        pg_dsn,
        "operators",
        "add",
        "2",
        "--name",
        "Li",
        "--roles",
        "operator,root",
        "--operator",
        "1",
        password=admin_pw,
        new=ops_pw,
    )
    assert bad_roles.returncode == 1 and "roles must be" in bad_roles.stderr
    short = headend(
        pg_dsn,
        "operators",
        "add",
        "2",
        "--name",
        "Li",
        "--roles",
        "operator",
        "--operator",
        "1",
        password=admin_pw,
        new="short",
    )
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    added = headend(
        pg_dsn,
        "operators",
        "add",
        "2",
        "--name",
        "Zhao Min",
        "--roles",
        "operator,approver",
        "--operator",
        "1",
        password=admin_pw,
        new=ops_pw,
    )
    assert added.returncode == 0, added.stderr
    by_operator = headend(
        pg_dsn,
        "operators",
        "add",
        "3",
        "--name",
        "Q",
        "--roles",
        "admin",
        "--operator",
        "2",
        password=ops_pw,
        new=ops_pw,
    )
    assert by_operator.returncode == 1 and "does not hold the admin role" in by_operator.stderr

    listed = [json.loads(line) for line in headend(pg_dsn, "operators", "list").stdout.splitlines()]
    assert [(o["id"], o["roles"], o["active"], o["created_by"]) for o in listed] == [
        ("1", ["admin"], True, listed[0]["created_by"]),  # the schema owner's login bootstrapped it
        ("2", ["operator", "approver"], True, "1"),
    ]
    assert listed[0]["created_by"] and not listed[0]["created_by"].isdigit()
    assert "argon2" not in headend(pg_dsn, "operators", "list").stdout

    changed = headend(
        pg_dsn, "operators", "passwd", "2", "--operator", "2", password=ops_pw, new="new-operator-pw"
    )
    assert changed.returncode == 0, changed.stderr
    stale = headend(
        pg_dsn, "operators", "passwd", "2", "--operator", "2", password=ops_pw, new="another-pw-123"
    )
    assert stale.returncode == 1 and "operator 2: unknown, disabled or wrong password" in stale.stderr
    other = headend(
        pg_dsn, "operators", "passwd", "1", "--operator", "2", password="new-operator-pw", new="hijacked-pw"
    )
    assert other.returncode == 1 and "does not hold the admin role" in other.stderr

    disabled = headend(
        pg_dsn,
        "operators",
        "disable",
        "2",
        "--reason",
        "left the company",
        "--operator",
        "1",
        password=admin_pw,
    )
    assert disabled.returncode == 0, disabled.stderr
    gone = headend(
        pg_dsn, "operators", "passwd", "2", "--operator", "2", password="new-operator-pw", new="x-pw-12345"
    )
    assert gone.returncode == 1 and "unknown, disabled or wrong password" in gone.stderr
    back = headend(
        pg_dsn, "operators", "enable", "2", "--reason", "came back", "--operator", "1", password=admin_pw
    )
    assert back.returncode == 0 and "operator 2 enabled" in back.stdout, back.stderr
    again = headend(
        pg_dsn, "operators", "passwd", "2", "--operator", "2", password="new-operator-pw", new="x-pw-12345"
    )
    assert again.returncode == 0, again.stderr
    nobody = headend(
        pg_dsn, "operators", "enable", "77", "--reason", "x", "--operator", "1", password=admin_pw
    )
    assert nobody.returncode == 1 and "no operator 77" in nobody.stderr

    conn = await asyncpg.connect(pg_dsn)
    try:
        trail = await conn.fetch(
            "SELECT actor, action, entity_id FROM audit_log WHERE entity = 'operator' ORDER BY id"
        )
        assert [tuple(t) for t in trail][1:] == [
            ("1", "operator.added", "2"),
            ("2", "operator.password_changed", "2"),
            ("1", "operator.disabled", "2"),
            ("1", "operator.enabled", "2"),
            ("2", "operator.password_changed", "2"),
        ]
        assert await conn.fetchval("SELECT password_hash LIKE '$argon2id$%' FROM operators WHERE id = '2'")
    finally:
        await conn.close()


async def _commands(conn: asyncpg.Connection, operators: list[str]) -> list[int]:
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    ids = []
    for n, operator in enumerate(operators, 1):
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
            "VALUES ('dlt645-2007', $1, 'm', $2, true) RETURNING id",
            f"{n:012d}",
            channel,
        )
        ids.append(
            await conn.fetchval(
                "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at) "
                "VALUES ($1, 'disconnect', 'arrears', $2, true, now() + interval '1 day') RETURNING id",
                meter,
                operator,
            )
        )
    return ids


async def test_a_reviewed_batch_is_approved_in_one_step_by_a_human_approver(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o5="approver", o6="operator", o7="approver,operator")
        ids = await _commands(conn, ["system", "system", "system"])
        review = headend(pg_dsn, "commands", "review")
        assert review.returncode == 0, review.stderr
        lines = review.stdout.splitlines()
        assert [json.loads(line)["id"] for line in lines[:-1]] == ids
        token = lines[-1].split()[1].rstrip(":")
        typo = headend(pg_dsn, "commands", "approve", "--batch", "0" * 12, "--operator", "5")
        assert typo.returncode == 1 and "not the batch awaiting approval now" in typo.stderr
        no_role = headend(pg_dsn, "commands", "approve", "--batch", token, "--operator", "6")
        assert no_role.returncode == 1 and "does not hold the approver role" in no_role.stderr
        for forged in ("System", "system", "op5"):
            refused = headend(pg_dsn, "commands", "approve", "--batch", token, "--operator", forged)
            assert refused.returncode == 1 and "1-8 digits" in refused.stderr
        assert await conn.fetchval("SELECT count(*) FROM commands WHERE approved_by IS NOT NULL") == 0

        done = headend(pg_dsn, "commands", "approve", "--batch", token, "--operator", "5")
        assert done.returncode == 0, done.stderr
        rows = await conn.fetch("SELECT approved_by FROM commands ORDER BY id")
        assert [r["approved_by"] for r in rows] == ["5", "5", "5"]
        audited = await conn.fetch("SELECT actor, entity_id FROM audit_log WHERE action = 'command.approved'")
        assert sorted((a["actor"], int(a["entity_id"])) for a in audited) == [("5", i) for i in ids]

        # a batch holding one's own command is refused whole; a changed batch needs a new review
        mine = await _commands_more(conn, "7")
        token = headend(pg_dsn, "commands", "review").stdout.splitlines()[-1].split()[1].rstrip(":")
        own = headend(pg_dsn, "commands", "approve", "--batch", token, "--operator", "7")
        assert own.returncode == 1 and "must differ" in own.stderr
        await _commands_more(conn, "system", address="000000000099")
        stale = headend(pg_dsn, "commands", "approve", "--batch", token, "--operator", "5")
        assert stale.returncode == 1 and "review` again" in stale.stderr
        assert await conn.fetchval("SELECT approved_by FROM commands WHERE id = $1", mine) is None
    finally:
        await conn.close()


async def _commands_more(conn: asyncpg.Connection, operator: str, address: str = "000000000098") -> int:
    channel = await conn.fetchval("SELECT id FROM channels WHERE name = 'c'")
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
        "VALUES ('dlt645-2007', $1, 'm', $2, true) RETURNING id",
        address,
        channel,
    )
    return await conn.fetchval(
        "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at) "
        "VALUES ($1, 'disconnect', 'manual', $2, true, now() + interval '1 day') RETURNING id",
        meter,
        operator,
    )


def test_passwords_are_prompted_hidden_and_never_echoed(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADEND_OPERATOR_PASSWORD", raising=False)
    monkeypatch.delenv("HEADEND_NEW_OPERATOR_PASSWORD", raising=False)
    add = ["operators", "add", "1", "--name", "Wang Li", "--roles", "admin", "--bootstrap", "--dsn", pg_dsn]
    mismatch = headend_prompted(*add, input="first-secret\nother-secret\nfirst-secret\nfirst-secret\n")
    assert mismatch.returncode == 0, mismatch.stdout
    assert "do not match" in mismatch.stdout and "secret" not in mismatch.stdout
    add2 = ["operators", "add", "2", "--name", "Li", "--roles", "cashier", "--operator", "1", "--dsn", pg_dsn]
    wrong = headend_prompted(*add2, input="other-secret\nsecond-secret\nsecond-secret\n")
    assert wrong.returncode == 1 and "operator 1: unknown, disabled or wrong password" in wrong.stdout
    right = headend_prompted(*add2, input="first-secret\nsecond-secret\nsecond-secret\n")
    assert right.returncode == 0 and "operator 2 (Li) added" in right.stdout
    assert "secret" not in wrong.stdout + right.stdout


async def test_five_wrong_passwords_lock_the_operator_until_an_admin_unlocks_or_the_lock_runs_out(
    pg_dsn: str,
) -> None:
    import asyncio

    from headend.operators import OperatorError, authenticate

    owner = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(owner, o1001="admin", o1002="operator")

        async def attempt(password: str) -> str:
            conn = await asyncpg.connect(pg_dsn)
            try:
                await authenticate(conn, "1002", password, "operator")
                return "signed in"
            except OperatorError as exc:
                return str(exc)
            finally:
                await conn.close()

        # a guesser with ten parallel connections: the database counts each, and the fifth locks
        guesses = await asyncio.gather(*(attempt(f"guess-{n}") for n in range(10)))
        assert guesses.count("operator 1002: unknown, disabled or wrong password") == 5, guesses
        assert all("locked until" in g for g in guesses if "wrong password" not in g), guesses
        locked = await owner.fetchrow("SELECT failed_sign_ins, locked_until FROM operators WHERE id = '1002'")
        assert locked["failed_sign_ins"] == 5 and locked["locked_until"] is not None
        assert await owner.fetchval("SELECT count(*) FROM operator_lockouts WHERE operator_id = '1002'") == 1
        # the right password is refused while locked, through the CLI too
        assert "locked until" in await attempt(PASSWORD)
        cli = headend(pg_dsn, "operators", "passwd", "1002", "--operator", "1002", new="another-pw-1")
        assert (
            cli.returncode == 1 and "locked until" in cli.stderr and "(an admin can unlock it)" in cli.stderr
        )
        # an operator who is not an admin cannot unlock; an admin can, with a reason (audited)
        refused = headend(pg_dsn, "operators", "unlock", "1002", "--reason", "x", "--operator", "1002")
        assert refused.returncode == 1
        unlocked = headend(
            pg_dsn,
            "operators",
            "unlock",
            "1002",
            "--reason",
            "called back on the duty phone",
            "--operator",
            "1001",
        )
        assert unlocked.returncode == 0, unlocked.stderr
        trail = await owner.fetch(
            "SELECT actor, action, reason FROM audit_log WHERE entity = 'operator' AND entity_id = '1002'"
            " AND action = 'operator.unlocked'"
        )
        assert [tuple(t) for t in trail] == [("1001", "operator.unlocked", "called back on the duty phone")]
        assert await attempt(PASSWORD) == "signed in"
        assert await owner.fetchval("SELECT failed_sign_ins FROM operators WHERE id = '1002'") == 0

        # a lock that ran out: the right password signs in and clears the count; a wrong one locks again
        for _ in range(5):
            await attempt("wrong-again")
        await owner.execute("UPDATE operators SET locked_until = now() - interval '1 s' WHERE id = '1002'")
        assert await attempt("still-wrong") == "operator 1002: unknown, disabled or wrong password"
        assert "locked until" in await attempt(PASSWORD)
        assert await owner.fetchval("SELECT count(*) FROM operator_lockouts WHERE operator_id = '1002'") == 3
        await owner.execute("UPDATE operators SET locked_until = now() - interval '1 s' WHERE id = '1002'")
        assert await attempt(PASSWORD) == "signed in"
        row = await owner.fetchrow("SELECT failed_sign_ins, locked_until FROM operators WHERE id = '1002'")
        assert (row["failed_sign_ins"], row["locked_until"]) == (0, None)
        listed = [json.loads(line) for line in headend(pg_dsn, "operators", "list").stdout.splitlines()]
        assert {o["id"]: (o["failed_sign_ins"], o["locked_until"]) for o in listed}["1002"] == (0, None)
    finally:
        await owner.close()


async def test_a_script_signs_in_with_a_token_that_carries_some_roles_expires_and_can_be_revoked(
    pg_dsn: str,
) -> None:
    owner = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(owner, o1001="admin", o1003="operator,cashier")
        made = headend(
            pg_dsn, "operators", "token", "add", "1003", "--label", "bank import", "--roles", "cashier",
            "--expires", "30d", "--operator", "1003",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        token = made.stdout.split()[-1]
        assert token.startswith("hdt_") and len(token) > 40
        # refused before anything is stored: a role the operator lacks, a lifetime over a year
        for roles, expires, why in (
            ("admin", "30d", "does not hold every role"),
            ("cashier", "400d", "at most"),
        ):
            refused = headend(
                pg_dsn, "operators", "token", "add", "1003", "--label", "x", "--roles", roles,
                "--expires", expires, "--operator", "1003",
            )  # fmt: skip
            assert refused.returncode == 1 and why in refused.stderr, refused.stderr
        stored = await owner.fetch("SELECT digest, roles FROM operator_tokens")
        assert len(stored) == 1 and token not in stored[0]["digest"] and stored[0]["roles"] == ["cashier"]

        listed = headend(pg_dsn, "operators", "token", "list", "1003", "--operator", "1003", token=token)
        assert listed.returncode == 0, listed.stderr
        (record,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert record["label"] == "bank import" and record["last_used_at"] is not None
        assert token not in listed.stdout + listed.stderr
        # the token carries cashier only: a command (the operator role) is refused
        command = headend(
            pg_dsn,
            "commands",
            "create",
            "1",
            "disconnect",
            "--reason",
            "x",
            "--operator",
            "1003",
            token=token,
        )
        assert command.returncode == 1 and "does not carry the operator role" in command.stderr, (
            command.stderr
        )
        # another operator's token, a wrong token: refused, and never counted towards the password lock
        wrong = headend(pg_dsn, "operators", "token", "list", "--operator", "1001", token=token)
        assert wrong.returncode == 1 and "unknown token" in wrong.stderr
        assert await owner.fetchval("SELECT failed_sign_ins FROM operators WHERE id = '1001'") == 0

        revoked = headend(
            pg_dsn,
            "operators",
            "token",
            "revoke",
            str(record["id"]),
            "--reason",
            "left",
            "--operator",
            "1003",
        )
        assert revoked.returncode == 0, revoked.stderr
        after = headend(pg_dsn, "operators", "token", "list", "1003", "--operator", "1003", token=token)
        assert after.returncode == 1 and "was revoked" in after.stderr
        trail = await owner.fetch(
            "SELECT actor, action FROM audit_log WHERE entity = 'operator' AND entity_id = '1003' ORDER BY id"
        )
        assert [tuple(t) for t in trail][-2:] == [
            ("1003", "operator.token_added"),
            ("1003", "operator.token_revoked"),
        ]

        again = headend(
            pg_dsn, "operators", "token", "add", "1003", "--label", "monitor", "--roles", "cashier",
            "--operator", "1001",
        )  # fmt: skip
        assert again.returncode == 0, again.stderr  # an admin makes one for another operator
        await owner.execute("UPDATE operator_tokens SET expires_at = now() WHERE label = 'monitor'")
        late = headend(
            pg_dsn, "operators", "token", "list", "1003", "--operator", "1003", token=again.stdout.split()[-1]
        )
        assert late.returncode == 1 and "expired at" in late.stderr
    finally:
        await owner.close()
