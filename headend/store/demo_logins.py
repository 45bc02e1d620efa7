"""The desk and reporting logins of docs/operations.md in the demo's own embedded server (trusted
local connections only, so no password), for the console the demo starts."""

from __future__ import annotations

import asyncpg

DESK_LOGIN = "headend_desk"
REPORT_LOGIN = "headend_report"


async def ensure_console_logins(conn: asyncpg.Connection) -> None:
    """Create ``headend_desk`` (in ``headend_billing``) and ``headend_report`` (in
    ``headend_reporting``) unless they exist."""
    for login, group in ((DESK_LOGIN, "headend_billing"), (REPORT_LOGIN, "headend_reporting")):
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login)
        if not exists:
            await conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE {group}")
