"""The daemon's records besides readings, stored through the writer so they spool like readings:
a channel's read-cycle statistics, a meter's event records and the daemon's own events (clock
corrections). Each stores idempotently (an upsert or a keyed insert), so a replay never doubles it,
and round-trips through the spool as one JSON object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from headend.store.cycles import upsert_read_cycle
from headend.store.events import MeterEventRow, insert_comm_event, insert_meter_events


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


_at = datetime.fromisoformat


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One channel's read cycle (``read_cycles``); a repeated interval updates its row."""

    channel_id: int
    cycle_at: datetime
    due: int
    succeeded: int
    readings: int
    started_at: datetime
    finished_at: datetime | None
    utilisation: float

    async def store(self, conn: asyncpg.Connection) -> None:
        await upsert_read_cycle(
            conn,
            self.channel_id,
            self.cycle_at,
            self.due,
            self.succeeded,
            self.readings,
            self.started_at,
            self.finished_at,
            self.utilisation,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "cycle",
            "channel_id": self.channel_id,
            "cycle_at": _time(self.cycle_at),
            "due": self.due,
            "succeeded": self.succeeded,
            "readings": self.readings,
            "started_at": _time(self.started_at),
            "finished_at": _time(self.finished_at),
            "utilisation": self.utilisation,
        }


@dataclass(frozen=True, slots=True)
class MeterEventsRecord:
    """A meter's event records as its driver reported them; those already stored are skipped."""

    meter_id: int
    rows: tuple[MeterEventRow, ...]

    async def store(self, conn: asyncpg.Connection) -> None:
        await insert_meter_events(conn, self.meter_id, self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "meter_events",
            "meter_id": self.meter_id,
            "rows": [[k, m, c, _time(at), _time(end), d] for k, m, c, at, end, d in self.rows],
        }


@dataclass(frozen=True, slots=True)
class CommEventRecord:
    """An event the daemon observed on a meter (e.g. ``clock_corrected``), stored once."""

    kind: str
    meter_id: int
    channel_id: int
    occurred_at: datetime
    details_json: str

    async def store(self, conn: asyncpg.Connection) -> None:
        await insert_comm_event(
            conn, self.kind, self.meter_id, self.channel_id, self.occurred_at, self.details_json
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "comm_event",
            "kind": self.kind,
            "meter_id": self.meter_id,
            "channel_id": self.channel_id,
            "occurred_at": _time(self.occurred_at),
            "details": self.details_json,
        }


StoredRecord = CycleRecord | MeterEventsRecord | CommEventRecord


def record_from_json(data: dict[str, Any]) -> StoredRecord:
    """The record a spool payload holds (the inverse of ``to_json``); ValueError if unknown."""
    kind = data.get("record")
    if kind == "cycle":
        return CycleRecord(
            data["channel_id"],
            _at(data["cycle_at"]),
            data["due"],
            data["succeeded"],
            data["readings"],
            _at(data["started_at"]),
            _parse(data["finished_at"]),
            data["utilisation"],
        )
    if kind == "meter_events":
        rows = tuple((k, m, c, _at(at), _parse(end), d) for k, m, c, at, end, d in data["rows"])
        return MeterEventsRecord(data["meter_id"], rows)
    if kind == "comm_event":
        return CommEventRecord(
            data["kind"], data["meter_id"], data["channel_id"], _at(data["occurred_at"]), data["details"]
        )
    raise ValueError(f"unknown spooled record {kind!r}")
