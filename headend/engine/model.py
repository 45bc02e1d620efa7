"""The engine's view of the inventory: channels and meters as loaded from the database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    id: int
    name: str
    url: str


@dataclass(frozen=True, slots=True)
class MeterSpec:
    id: int
    channel_id: int
    protocol: str
    address: str
    unit_id: int | None
    model: str
    installed_at: datetime
    pn: int | None = None  # behind a 1376.1 concentrator: measurement point and port
    port: int | None = None


@dataclass(frozen=True, slots=True)
class InventorySnapshot:
    channels: dict[int, ChannelSpec]
    meters_by_channel: dict[int, list[MeterSpec]]

    def meter(self, meter_id: int) -> MeterSpec | None:
        for meters in self.meters_by_channel.values():
            for meter in meters:
                if meter.id == meter_id:
                    return meter
        return None


def _channel_url(row: asyncpg.Record) -> str:
    url = (row["settings"] or {}).get("url") if isinstance(row["settings"], dict) else None
    return url or f"{row['kind']}://{row['address']}"


async def inventory_version(conn: asyncpg.Connection) -> tuple:
    """A cheap token that changes whenever channels or meters are added, changed or removed."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM channels), (SELECT max(updated_at) FROM channels),"
        " (SELECT count(*) FROM meters), (SELECT max(updated_at) FROM meters)"
    )
    return tuple(row)


async def load_inventory(conn: asyncpg.Connection) -> InventorySnapshot:
    """Enabled channels and their enabled, installed meters."""
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
    channels = {
        r["id"]: ChannelSpec(r["id"], r["name"], _channel_url(r))
        for r in await conn.fetch("SELECT id, name, kind, address, settings FROM channels WHERE enabled")
    }
    meters: dict[int, list[MeterSpec]] = {cid: [] for cid in channels}
    rows = await conn.fetch(
        "SELECT id, channel_id, protocol, address, unit_id, model, installed_at,"
        " (settings->>'pn')::int AS pn, (settings->>'port')::int AS port FROM meters"
        " WHERE enabled AND removed_at IS NULL ORDER BY channel_id, id"
    )
    for r in rows:
        if r["channel_id"] in meters:
            meters[r["channel_id"]].append(MeterSpec(**dict(r)))
    return InventorySnapshot(channels, meters)
