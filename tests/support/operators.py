"""Operators for tests: created over the schema owner's connection, with one known test password."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
from argon2 import PasswordHasher

from headend.store import operators as store
from tests.support.cli import CliResult, headend
from tests.support.postgres import run_sync

PASSWORD = "test-password-1"  # test databases only
INVENTORY_ADMIN = "9000"  # the admin `import_inventory_cli` signs in as
# argon2id at its cheapest parameters (1 MiB, one pass, one lane): signing in as a fixture operator
# costs about a millisecond instead of the 0.2 s of CPU that the production parameters cost on purpose
# (hash_password's; operators added through `headend operators add` in the tests still get those).
# The stored PHC string carries its parameters, so sign-in derives the proof exactly as in production.
_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, hash_len=32).hash(PASSWORD)


async def add_operators(conn: asyncpg.Connection, **roles: str) -> None:
    """Create operators as the schema owner: ``add_operators(conn, o1001="operator,approver")``."""
    for key, role_list in roles.items():
        operator_id = key.removeprefix("o")
        await store.add_operator(conn, operator_id, f"operator {operator_id}", role_list.split(","), _HASH)


def operator_env(password: str = PASSWORD) -> dict[str, str]:
    """The environment of a CLI process that signs in with ``password`` (scripts use the same variable)."""
    return {**os.environ, "HEADEND_OPERATOR_PASSWORD": password}


def import_inventory_cli(dsn: str, path: Path, timeout: float = 60) -> CliResult:
    """``headend inventory import PATH`` as a real process, signed in as ``INVENTORY_ADMIN`` (created as
    an admin first if the database does not hold it)."""

    async def ensure_admin() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM operators WHERE id = $1)", INVENTORY_ADMIN
            ):
                await add_operators(conn, **{f"o{INVENTORY_ADMIN}": "admin"})
        finally:
            await conn.close()

    run_sync(ensure_admin)
    command = ["inventory", "import", str(path), "--operator", INVENTORY_ADMIN, "--dsn", dsn]
    return headend(*command, env=operator_env(), timeout=timeout)
