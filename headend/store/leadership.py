"""Queries for the daemon's claim on its database: one session advisory lock, held by the active daemon."""

from __future__ import annotations

import asyncpg

DAEMON_LOCK = 0x68656164_0002  # "head" + 2 (0x68656164_0001 serialises migrations)

_HOLDER = """
SELECT a.application_name, a.client_addr::text AS client_addr, a.pid
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1
"""


async def try_daemon_lock(conn: asyncpg.Connection) -> bool:
    """Take the daemon lock on this connection if no other session holds it (never waits)."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", DAEMON_LOCK)
    return taken


async def daemon_lock_holder(conn: asyncpg.Connection) -> str | None:
    """Who holds the daemon lock: the holder's application name and address, None if nobody does."""
    row = await conn.fetchrow(_HOLDER, DAEMON_LOCK)
    if row is None:
        return None
    name, address = row["application_name"] or "unnamed", row["client_addr"] or "a local socket"
    return f"{name} from {address} (backend {row['pid']})"


async def end_session_when_idle(conn: asyncpg.Connection, seconds: float) -> bool:
    """Have the server end this session once it sits idle ``seconds`` (a holder that stopped
    checking in, e.g. a frozen process, loses the lock); False on a server without the setting."""
    try:
        await conn.execute(f"SET idle_session_timeout = {int(seconds * 1000)}")
    except asyncpg.UndefinedObjectError:  # PostgreSQL before 14
        return False
    return True


async def ping(conn: asyncpg.Connection) -> None:
    """One round trip on the connection (raises if it is gone)."""
    await conn.fetchval("SELECT 1")
