"""The least-privilege logins of docs/operations.md in the test server.

The documented logins (``headend_app`` in ``headend_daemon``, ``headend_desk`` in ``headend_billing``,
``headend_report`` in ``headend_reporting``) exist once per server (roles belong to the cluster), made by
:func:`create_documented_logins` when the migrated template is ready; :func:`daemon_dsn`,
:func:`desk_dsn` and :func:`report_dsn` turn the owner's DSN of a test database into theirs. The
shared runners (``cli``, ``daemons``, ``engine``) use them by default; the superuser that creates the
databases only seeds what no login may write, under a name that says so (``pg_dsn`` is the owner's).

The ``logins`` fixture adds one fresh login per group, created as the docs tell users to
(``CREATE ROLE name LOGIN IN ROLE group``) and dropped after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from headend.store.embedded import SUPERUSER

GROUPS = ("headend_daemon", "headend_billing", "headend_reporting")
DAEMON_LOGIN = "headend_app"
DESK_LOGIN = "headend_desk"
REPORT_LOGIN = "headend_report"
DOCUMENTED = {
    DAEMON_LOGIN: "headend_daemon",
    DESK_LOGIN: "headend_billing",
    REPORT_LOGIN: "headend_reporting",
}


def as_login(dsn: str, user: str) -> str:
    """``dsn`` with another user (the test server trusts local connections)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def login_of(dsn: str) -> str:
    """The user a DSN names ("" when it names none)."""
    return urlsplit(dsn).username or ""


def superusers() -> set[str]:
    """The superusers of the test servers: the embedded one's and ``$HEADEND_TEST_DSN``'s."""
    return {SUPERUSER, login_of(os.environ.get("HEADEND_TEST_DSN", ""))} - {""}


def instead_of_superuser(login: str, dsn: str) -> str:
    """``dsn`` as ``login`` if it names a test server's superuser, else unchanged (a test's own login)."""
    return as_login(dsn, login) if login_of(dsn) in superusers() else dsn


def daemon_dsn(dsn: str) -> str:
    """``dsn`` as ``headend_app``: what ``headend run`` and the in-process engine and services use."""
    return as_login(dsn, DAEMON_LOGIN)


def desk_dsn(dsn: str) -> str:
    """``dsn`` as ``headend_desk``: the operators' CLI (commands, billing, switch, operators, inventory)."""
    return as_login(dsn, DESK_LOGIN)


def report_dsn(dsn: str) -> str:
    """``dsn`` as ``headend_report``: dashboards and exports."""
    return as_login(dsn, REPORT_LOGIN)


async def create_documented_logins(admin: asyncpg.Connection) -> None:
    """Create the documented logins in their group roles unless they exist (the group roles exist
    once a database was migrated); none of them is a superuser or owns anything."""
    for login, group in DOCUMENTED.items():
        try:
            await admin.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE {group}')
        except asyncpg.DuplicateObjectError:  # a server kept from an earlier session
            await admin.execute(f'GRANT {group} TO "{login}"')


async def is_superuser(dsn: str) -> bool:
    """Whether the session ``dsn`` opens runs as a superuser."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = session_user"))
    finally:
        await conn.close()


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


@pytest.fixture
async def daemon_conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database as ``headend_app``, for a daemon duty a test calls itself
    (a fee-control run, the executor, a billing pass) while it seeds through ``pg_dsn``."""
    conn = await asyncpg.connect(daemon_dsn(pg_dsn))
    try:
        yield conn
    finally:
        await conn.close()
