"""The daemon's claim on its database: active while it holds the daemon lock on a dedicated
connection, a hot standby while another daemon holds it, waiting while the database is unreachable.

Each change of state is logged once (one line, not one per attempt). The server releases the lock
the moment the holder's connection closes (its process died), when the holder's host went silent
(once TCP keepalive gives up on it) or when the holder stopped checking in (a frozen process: the
session's idle timeout ends it); the active daemon checks its own connection more often than that
(``[ha] check``), so with ``[ha] fencing`` it stops before a standby can take over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Literal

import asyncpg

from headend.config import HaConfig
from headend.store.leadership import daemon_lock_holder, end_session_when_idle, ping, try_daemon_lock
from headend.store.writer import UNAVAILABLE

log = logging.getLogger("headend.leadership")

ClaimState = Literal["active", "standby", "unreachable", "lost"]
KEEPALIVE_COUNT = 3  # unanswered probes before the server drops a silent holder (and its lock)


def keepalive_settings(config: HaConfig) -> dict[str, str]:
    """Server-side TCP keepalive for the lock connection: the server gives a silent holder's lock
    up only well after that holder has noticed its connection is gone (``check + check_timeout``)."""
    idle = max(10, round(3 * (config.check + config.check_timeout)))
    interval = max(1, round(config.check_timeout))
    return {
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    }


def release_after(config: HaConfig) -> float:
    """Seconds after a silent holder's last traffic at which the server releases its lock (at least)."""
    settings = keepalive_settings(config)
    idle, interval = float(settings["tcp_keepalives_idle"]), float(settings["tcp_keepalives_interval"])
    return idle + KEEPALIVE_COUNT * interval


class Leadership:
    """``claim()`` tries the lock once; ``wait_lost()`` returns when the held lock's connection fails."""

    def __init__(self, dsn: str, config: HaConfig) -> None:
        self.dsn = dsn
        self.config = config
        self.state: ClaimState | None = None
        self.name = f"headend {socket.gethostname()}:{os.getpid()}"
        self._conn: asyncpg.Connection | None = None

    async def claim(self) -> ClaimState:
        """One attempt at the daemon lock; the resulting state (logged when it changed)."""
        if self.state == "active" and self._conn is not None and not self._conn.is_closed():
            return "active"
        timeout = self.config.check_timeout
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self.dsn,
                    timeout=timeout,
                    server_settings={"application_name": self.name, **keepalive_settings(self.config)},
                )
                async with asyncio.timeout(timeout):
                    await end_session_when_idle(self._conn, release_after(self.config))
            async with asyncio.timeout(timeout):
                locked = await try_daemon_lock(self._conn)
            if locked:
                return self._become("active", {})
            async with asyncio.timeout(timeout):
                holder = await daemon_lock_holder(self._conn)
            return self._become("standby", {"active_daemon": holder, "poll_s": self.config.poll})
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            self._drop()
            return self._become("unreachable", {"error": f"{type(exc).__name__}: {exc}"})

    async def check(self) -> bool:
        """One round trip on the lock connection; False, and the state ``lost``, when it failed."""
        conn = self._conn
        try:
            if conn is None:
                raise ConnectionError("no lock connection")
            async with asyncio.timeout(self.config.check_timeout):
                await ping(conn)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            self._drop()
            self._become("lost", {"error": f"{type(exc).__name__}: {exc}", "fencing": self.config.fencing})
            return False
        return True

    async def wait_lost(self) -> None:
        """Return once the lock connection stops answering (checked every ``[ha] check``)."""
        while await self.check():
            await asyncio.sleep(self.config.check)

    async def close(self) -> None:
        """Give the lock up (closing its connection)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(self.config.check_timeout):
                    await conn.close()
            except (*UNAVAILABLE, asyncpg.PostgresError):
                conn.terminate()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _become(self, state: ClaimState, details: dict[str, object]) -> ClaimState:
        if state != self.state:
            self.state = state
            message = {
                "active": "active: this daemon holds the database lock and polls the buses",
                "standby": "standby: another daemon is active on this database; waiting for its lock",
                "unreachable": "database unreachable; retrying with backoff",
                "lost": "database lock lost",
            }[state]
            level = logging.INFO if state == "active" else logging.WARNING
            log.log(level, message, extra={"daemon": self.name, **details})
        return state
