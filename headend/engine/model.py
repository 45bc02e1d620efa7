"""The engine's view of the inventory: channels and meters as loaded from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from headend.store.inventory import enabled_channels, enabled_meters


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
    name: str | None = None
    pn: int | None = None  # behind a 1376.1 concentrator: measurement point and port
    port: int | None = None
    identity: str | None = None  # the DL/T 645 meter number recorded for it (04 00 04 02)

    @property
    def label(self) -> str:
        """How logs name the meter: its name and address (or unit id)."""
        where = f"unit {self.unit_id}" if self.protocol == "modbus" else self.address
        return f"{self.name} ({where})" if self.name else where


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


async def load_inventory(conn: asyncpg.Connection) -> InventorySnapshot:
    """Enabled channels and their enabled, installed meters."""
    channels = {
        r["id"]: ChannelSpec(r["id"], r["name"], _channel_url(r)) for r in await enabled_channels(conn)
    }
    meters: dict[int, list[MeterSpec]] = {cid: [] for cid in channels}
    for r in await enabled_meters(conn):
        if r["channel_id"] in meters:
            meters[r["channel_id"]].append(MeterSpec(**dict(r)))
    return InventorySnapshot(channels, meters)
