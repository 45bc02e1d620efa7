"""Queries the inventory import uses to check new rows against what is stored already."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class StoredChannel:
    """A channel row: its name and the URL the daemon opens."""

    name: str
    url: str


async def stored_channels(conn: asyncpg.Connection) -> list[StoredChannel]:
    """Every channel with the URL the daemon would open (settings.url, else kind://address)."""
    rows = await conn.fetch(
        "SELECT name, coalesce(settings->>'url', kind || '://' || address) AS url FROM channels ORDER BY name"
    )
    return [StoredChannel(r["name"], r["url"]) for r in rows]
