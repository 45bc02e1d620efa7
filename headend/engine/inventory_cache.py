"""The last inventory the daemon loaded, kept on disk so it can read its meters when it starts while
the database is unreachable (store and forward from the first interval)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from headend.engine.model import ChannelSpec, InventorySnapshot, MeterSpec

log = logging.getLogger("headend.engine.engine")

CACHE_NAME = "inventory.json"


def _meter_json(meter: MeterSpec) -> dict[str, Any]:
    """Every field of the meter (name, concentrator Pn/port included), the time as ISO text."""
    return {**asdict(meter), "installed_at": meter.installed_at.isoformat()}


def save_snapshot(path: Path, snapshot: InventorySnapshot) -> None:
    """Write the snapshot atomically (a reader sees the old file or the new one, never half)."""
    data = {
        "channels": [{"id": c.id, "name": c.name, "url": c.url} for c in snapshot.channels.values()],
        "meters": [_meter_json(m) for meters in snapshot.meters_by_channel.values() for m in meters],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def load_snapshot(path: Path) -> InventorySnapshot | None:
    """The cached snapshot; None (said once in the log) when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        channels = {c["id"]: ChannelSpec(c["id"], c["name"], c["url"]) for c in data["channels"]}
        meters: dict[int, list[MeterSpec]] = {cid: [] for cid in channels}
        for m in data["meters"]:
            if m["channel_id"] in meters:
                meters[m["channel_id"]].append(
                    MeterSpec(**{**m, "installed_at": datetime.fromisoformat(m["installed_at"])})
                )
    except FileNotFoundError:
        log.warning("no cached inventory; nothing to read until the database answers")
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "cached inventory unusable; nothing to read until the database answers", extra={"error": str(exc)}
        )
        return None
    return InventorySnapshot(channels, meters)
