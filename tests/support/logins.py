"""The least-privilege logins of docs/operations.md in a test database: one login per group role
(``headend_daemon``, ``headend_billing``, ``headend_reporting``), created as the docs tell users to
(``CREATE ROLE name LOGIN IN ROLE group``) and dropped after the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

GROUPS = ("headend_daemon", "headend_billing", "headend_reporting")


def as_login(dsn: str, user: str) -> str:
    """``dsn`` with another user (the test server trusts local connections)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
async def logins(pg_dsn: str) -> AsyncIterator[dict[str, str]]:
    """DSNs by group without its prefix: ``daemon``, ``billing``, ``reporting``."""
    owner = await asyncpg.connect(pg_dsn)
    suffix = uuid.uuid4().hex[:8]
    names = {group: f"{group}_{suffix}" for group in GROUPS}
    for group, name in names.items():
        await owner.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {group}')
    try:
        yield {group.removeprefix("headend_"): as_login(pg_dsn, name) for group, name in names.items()}
    finally:
        for name in names.values():
            await owner.execute(f'DROP OWNED BY "{name}"')
            await owner.execute(f'DROP ROLE "{name}"')
        await owner.close()
