"""Meter requests (migration 0054): an operator asks, the daemon reads a meter now (``read``, 点抄) or
re-collects its missing intervals over a time range (``recollect``, 补抄).

The desk side (CLI, web console) inserts with :func:`create_read_request` /
:func:`create_recollect_request` on a connection an operator signed in to, and waits with
:func:`wait_request`; the daemon claims, finishes and expires with the compare-and-set updates below.
The database checks who may do each, bounds the open requests per operator and per channel, audits
every change and notifies ``CHANNEL``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from headend.store.results import row, rows

CHANNEL = "headend_meter_requests"  # NOTIFY channel; the payload is '<id> <state>'
LIMIT_KEYS = ("per_operator", "per_channel", "max_range_days")  # headend_settings 'requests.<key>'

RequestKind = Literal["read", "recollect"]
RequestState = Literal["requested", "running", "done", "failed", "expired", "cancelled"]
FinalState = Literal["done", "failed"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "expired", "cancelled"})
OPEN_STATES = ("requested", "running")
ResultValue = float | int | str | None | list[str]
Result = dict[str, ResultValue | dict[str, float]]  # the daemon's answer as JSON

COLUMNS = (
    "r.id, r.meter_id, coalesce(m.name, m.address) AS meter, r.channel_id, c.name AS channel, r.kind,"
    " r.requested_by, r.quantities, r.range_from, r.range_to, r.state, r.reason, r.result, r.filled,"
    " r.missing, r.requested_at, r.expires_at, r.started_at, r.finished_at"
)
FROM = "meter_requests r JOIN meters m ON m.id = r.meter_id JOIN channels c ON c.id = r.channel_id"


@dataclass(frozen=True, slots=True)
class MeterRequest:
    """One request as stored."""

    id: int
    meter_id: int
    meter: str
    channel_id: int
    channel: str
    kind: RequestKind
    requested_by: str
    quantities: list[str] | None
    range_from: datetime | None
    range_to: datetime | None
    state: RequestState
    reason: str | None
    result: Result | None
    filled: int | None
    missing: int | None
    requested_at: datetime
    expires_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, object]:
        """The request as one JSON object (times in ISO 8601)."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _request(record: asyncpg.Record) -> MeterRequest:
    result = record["result"]
    result = json.loads(result) if isinstance(result, str) else result
    quantities = record["quantities"]
    return MeterRequest(
        id=record["id"],
        meter_id=record["meter_id"],
        meter=record["meter"],
        channel_id=record["channel_id"],
        channel=record["channel"],
        kind=record["kind"],
        requested_by=record["requested_by"],
        quantities=None if quantities is None else list(quantities),
        range_from=record["range_from"],
        range_to=record["range_to"],
        state=record["state"],
        reason=record["reason"],
        result=result if isinstance(result, dict) else None,
        filled=record["filled"],
        missing=record["missing"],
        requested_at=record["requested_at"],
        expires_at=record["expires_at"],
        started_at=record["started_at"],
        finished_at=record["finished_at"],
    )


# -- the desk ------------------------------------------------------------------------------------


async def create_read_request(
    conn: asyncpg.Connection,
    meter_id: int,
    operator: str,
    quantities: Sequence[str] | None = None,
    expires_in_s: float = 600.0,
) -> int:
    """An on-demand read of ``quantities`` (None: the meter's read plan) asked by the signed-in
    ``operator``; unclaimed, it expires ``expires_in_s`` seconds from now. Returns its id."""
    value = await conn.fetchval(
        "INSERT INTO meter_requests (meter_id, kind, requested_by, quantities, expires_at)"
        " VALUES ($1, 'read', $2, $3::text[], now() + make_interval(secs => $4)) RETURNING id",
        meter_id,
        operator,
        None if quantities is None else list(quantities),
        expires_in_s,
    )
    assert isinstance(value, int)
    return value


async def create_recollect_request(
    conn: asyncpg.Connection,
    meter_id: int,
    operator: str,
    since: datetime,
    until: datetime,
    expires_in_s: float = 600.0,
) -> int:
    """A re-collection of the meter's intervals in ``[since, until)`` that hold no reading, asked by the
    signed-in ``operator``; unclaimed, it expires ``expires_in_s`` seconds from now. Returns its id."""
    value = await conn.fetchval(
        "INSERT INTO meter_requests (meter_id, kind, requested_by, range_from, range_to, expires_at)"
        " VALUES ($1, 'recollect', $2, $3, $4, now() + make_interval(secs => $5)) RETURNING id",
        meter_id,
        operator,
        since,
        until,
        expires_in_s,
    )
    assert isinstance(value, int)
    return value


async def get_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int) -> MeterRequest | None:
    """The request ``request_id``, or None."""
    found = await row(conn, f"SELECT {COLUMNS} FROM {FROM} WHERE r.id = $1", request_id)
    return None if found is None else _request(found)


async def list_requests(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    meter_id: int | None = None,
    state: str | None = None,
    limit: int = 50,
) -> list[MeterRequest]:
    """The newest requests first, of one meter and in one state when given."""
    found = await rows(
        conn,
        f"SELECT {COLUMNS} FROM {FROM} WHERE ($1::int IS NULL OR r.meter_id = $1)"
        " AND ($2::text IS NULL OR r.state = $2) ORDER BY r.id DESC LIMIT $3",
        meter_id,
        state,
        limit,
    )
    return [_request(r) for r in found]


async def cancel_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int, reason: str) -> bool:
    """requested -> cancelled (its requester, or an admin), unless the daemon took it meanwhile."""
    done = await conn.fetchval(
        "UPDATE meter_requests SET state = 'cancelled', reason = $2"
        " WHERE id = $1 AND state = 'requested' RETURNING true",
        request_id,
        reason,
    )
    return done is True


async def wait_request(conn: asyncpg.Connection, request_id: int, timeout: float) -> MeterRequest:
    """The request once it is final, or as it stands after ``timeout`` seconds: woken by its
    notifications on ``conn`` (a connection of the caller's own, not a pool's)."""
    changed = asyncio.Event()

    def notified(_conn: object, _pid: object, _channel: object, payload: object) -> None:
        if str(payload).split(" ", 1)[0] == str(request_id):
            changed.set()

    await conn.add_listener(CHANNEL, notified)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed.clear()
            request = await get_request(conn, request_id)
            if request is None:
                raise LookupError(f"no meter request {request_id}")
            left = deadline - loop.time()
            if request.final or left <= 0:
                return request
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()
    finally:
        await conn.remove_listener(CHANNEL, notified)


# -- the daemon ----------------------------------------------------------------------------------


async def publish_limits(conn: asyncpg.Connection | asyncpg.Pool, limits: dict[str, int]) -> None:
    """Make the daemon's ``[requests]`` bounds (by :data:`LIMIT_KEYS`) the ones the database enforces."""
    await conn.execute(
        """INSERT INTO headend_settings (key, value)
           SELECT 'requests.' || k, v FROM unnest($1::text[], $2::text[]) AS l(k, v)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
           WHERE headend_settings.value IS DISTINCT FROM EXCLUDED.value""",
        list(limits),
        [str(v) for v in limits.values()],
    )


async def waiting_requests(
    conn: asyncpg.Connection | asyncpg.Pool, channel_ids: Sequence[int] | None = None
) -> list[MeterRequest]:
    """Requests not claimed yet and not past their expiry (on these channels when given), oldest first."""
    found = await rows(
        conn,
        f"SELECT {COLUMNS} FROM {FROM} WHERE r.state = 'requested' AND r.expires_at > now()"
        " AND ($1::int[] IS NULL OR r.channel_id = ANY ($1::int[])) ORDER BY r.id",
        None if channel_ids is None else list(channel_ids),
    )
    return [_request(r) for r in found]


async def claim_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int) -> bool:
    """requested -> running, unless expired, cancelled or taken meanwhile (the daemon)."""
    done = await conn.fetchval(
        "UPDATE meter_requests SET state = 'running'"
        " WHERE id = $1 AND state = 'requested' AND expires_at > now() RETURNING true",
        request_id,
    )
    return done is True


async def finish_request(
    conn: asyncpg.Connection | asyncpg.Pool,
    request_id: int,
    state: FinalState,
    reason: str,
    result: Result | None = None,
    counts: tuple[int, int] | None = None,
) -> bool:
    """running -> done / failed with its one-line reason, result and (a re-collection's) counts of
    intervals filled and still missing (the daemon)."""
    filled, missing = counts if counts is not None else (None, None)
    done = await conn.fetchval(
        "UPDATE meter_requests SET state = $2, reason = $3, result = $4::jsonb, filled = $5, missing = $6"
        " WHERE id = $1 AND state = 'running' RETURNING true",
        request_id,
        state,
        reason,
        None if result is None else json.dumps(result),
        filled,
        missing,
    )
    return done is True


async def expire_overdue(
    conn: asyncpg.Connection | asyncpg.Pool, reason: str, channel_id: int | None = None
) -> list[tuple[int, str]]:
    """Every unclaimed request past its expiry (on one channel when given) -> expired (the daemon);
    their ids and kinds."""
    found = await rows(
        conn,
        "UPDATE meter_requests SET state = 'expired', reason = $1"
        " WHERE state = 'requested' AND expires_at <= now() AND ($2::int IS NULL OR channel_id = $2)"
        " RETURNING id, kind",
        reason,
        channel_id,
    )
    return [(r["id"], r["kind"]) for r in found]


async def fail_interrupted(conn: asyncpg.Connection | asyncpg.Pool, reason: str) -> list[tuple[int, str]]:
    """Every running request -> failed: a daemon that starts finds only its predecessor's there."""
    found = await rows(
        conn,
        "UPDATE meter_requests SET state = 'failed', reason = $1 WHERE state = 'running' RETURNING id, kind",
        reason,
    )
    return [(r["id"], r["kind"]) for r in found]


async def marked_missing(
    conn: asyncpg.Connection | asyncpg.Pool, meter_id: int, quantity: str, since: datetime, upto: datetime
) -> int:
    """How many of the meter's intervals in ``[since, upto]`` hold a ``missing`` marker for ``quantity``."""
    value = await conn.fetchval(
        "SELECT count(*) FROM readings r JOIN quantities q ON q.id = r.quantity_id"
        " WHERE r.meter_id = $1 AND q.name = $2 AND r.ts >= $3 AND r.ts <= $4 AND r.quality = 'missing'",
        meter_id,
        quantity,
        since,
        upto,
    )
    return int(value or 0)


Listener = Callable[[asyncpg.Connection, int, str, object], None]


async def listen(conn: asyncpg.Connection, callback: Listener) -> None:
    """Call ``callback`` on every notification of ``CHANNEL`` on ``conn``."""
    await conn.add_listener(CHANNEL, callback)
