"""Operators for tests: created over the schema owner's connection, with one known test password."""

from __future__ import annotations

import os

import asyncpg

from headend.operators import hash_password
from headend.store import operators as store

PASSWORD = "test-password-1"  # test databases only
_HASH = hash_password(PASSWORD)  # hashed once per test session: argon2 is slow on purpose


async def add_operators(conn: asyncpg.Connection, **roles: str) -> None:
    """Create operators as the schema owner: ``add_operators(conn, o1001="operator,approver")``."""
    for key, role_list in roles.items():
        operator_id = key.removeprefix("o")
        await store.add_operator(conn, operator_id, f"operator {operator_id}", role_list.split(","), _HASH)


def operator_env(password: str = PASSWORD) -> dict[str, str]:
    """The environment of a CLI process that signs in with ``password`` (scripts use the same variable)."""
    return {**os.environ, "HEADEND_OPERATOR_PASSWORD": password}
