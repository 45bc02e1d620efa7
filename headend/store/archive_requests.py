"""Archive requests (migration 0040): the desk asks, the daemon holding a dial-in concentrator's
connection reads or rewrites its meter archive. Every write here is a compare-and-set on the state;
the database checks who may make it, audits it and notifies ``CHANNEL``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from headend.store.results import row, rows

CHANNEL = "headend_archive_requests"  # NOTIFY channel; the payload is the request id

RequestKind = Literal["read", "push"]
RequestState = Literal["requested", "running", "done", "failed", "expired"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "expired"})
ArchiveRow = dict[str, int | str]  # one archive record or inventory point as JSON
Outcome = dict[str, object]

COLUMNS = (
    "r.id, r.channel_id, c.name AS channel, r.kind, r.requested_by, r.wanted, r.writes, r.deletes,"
    " r.state, r.result, r.outcome, r.requested_at, r.expires_at"
)


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    """One request as stored."""

    id: int
    channel_id: int
    channel: str
    kind: RequestKind
    requested_by: str
    wanted: list[ArchiveRow]
    writes: list[ArchiveRow] | None
    deletes: list[ArchiveRow] | None
    state: RequestState
    result: str | None
    outcome: Outcome | None
    requested_at: datetime
    expires_at: datetime

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _json(value: object) -> object:
    """A jsonb column's value (text, or already decoded where the connection has a jsonb codec)."""
    return json.loads(value) if isinstance(value, str) else value


def _request(record: asyncpg.Record) -> ArchiveRequest:
    wanted, writes, deletes, outcome = (_json(record[k]) for k in ("wanted", "writes", "deletes", "outcome"))
    assert isinstance(wanted, list)
    return ArchiveRequest(
        id=record["id"],
        channel_id=record["channel_id"],
        channel=record["channel"],
        kind=record["kind"],
        requested_by=record["requested_by"],
        wanted=wanted,
        writes=writes if isinstance(writes, list) else None,
        deletes=deletes if isinstance(deletes, list) else None,
        state=record["state"],
        result=record["result"],
        outcome=outcome if isinstance(outcome, dict) else None,
        requested_at=record["requested_at"],
        expires_at=record["expires_at"],
    )


async def insert_request(
    conn: asyncpg.Connection,
    channel_id: int,
    operator: str,
    wanted: list[ArchiveRow],
    expires_in_s: float,
    changes: tuple[list[ArchiveRow], list[ArchiveRow]] | None = None,
) -> int:
    """A new request of the signed-in ``operator``: a read, or with ``changes`` (rows to write, rows
    to delete) a push; it expires ``expires_in_s`` seconds from now. Returns its id."""
    writes, deletes = changes if changes is not None else (None, None)
    value = await conn.fetchval(
        "INSERT INTO archive_requests (channel_id, kind, requested_by, wanted, writes, deletes, expires_at)"
        " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, now() + make_interval(secs => $7))"
        " RETURNING id",
        channel_id,
        "read" if changes is None else "push",
        operator,
        json.dumps(wanted),
        None if writes is None else json.dumps(writes),
        None if deletes is None else json.dumps(deletes),
        expires_in_s,
    )
    assert isinstance(value, int)
    return value


async def get_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int) -> ArchiveRequest | None:
    """The request ``request_id``, or None."""
    found = await row(
        conn,
        f"SELECT {COLUMNS} FROM archive_requests r JOIN channels c ON c.id = r.channel_id WHERE r.id = $1",
        request_id,
    )
    return None if found is None else _request(found)


async def waiting_requests(conn: asyncpg.Connection | asyncpg.Pool) -> list[ArchiveRequest]:
    """Requests not claimed yet and not past their expiry, oldest first."""
    found = await rows(
        conn,
        f"SELECT {COLUMNS} FROM archive_requests r JOIN channels c ON c.id = r.channel_id"
        " WHERE r.state = 'requested' AND r.expires_at > now() ORDER BY r.id",
    )
    return [_request(r) for r in found]


async def claim_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int) -> bool:
    """requested -> running, unless expired or taken meanwhile (the daemon)."""
    done = await conn.fetchval(
        "UPDATE archive_requests SET state = 'running'"
        " WHERE id = $1 AND state = 'requested' AND expires_at > now() RETURNING true",
        request_id,
    )
    return done is True


async def finish_request(
    conn: asyncpg.Connection | asyncpg.Pool,
    request_id: int,
    state: Literal["done", "failed"],
    result: str,
    outcome: Outcome | None = None,
) -> bool:
    """running -> done / failed with its result line and outcome (the daemon)."""
    done = await conn.fetchval(
        "UPDATE archive_requests SET state = $2, result = $3, outcome = $4::jsonb"
        " WHERE id = $1 AND state = 'running' RETURNING true",
        request_id,
        state,
        result,
        None if outcome is None else json.dumps(outcome),
    )
    return done is True


async def expire_request(conn: asyncpg.Connection | asyncpg.Pool, request_id: int, result: str) -> bool:
    """requested -> expired (nothing was sent): its requester giving up, or the daemon."""
    done = await conn.fetchval(
        "UPDATE archive_requests SET state = 'expired', result = $2"
        " WHERE id = $1 AND state = 'requested' RETURNING true",
        request_id,
        result,
    )
    return done is True


async def expire_overdue(conn: asyncpg.Connection | asyncpg.Pool, result: str) -> list[int]:
    """Every unclaimed request past its expiry -> expired (the daemon); their ids."""
    found = await rows(
        conn,
        "UPDATE archive_requests SET state = 'expired', result = $1"
        " WHERE state = 'requested' AND expires_at <= now() RETURNING id",
        result,
    )
    return [r["id"] for r in found]


async def fail_interrupted(conn: asyncpg.Connection | asyncpg.Pool, result: str) -> list[int]:
    """Every running request -> failed: a daemon that starts finds only its predecessor's there."""
    found = await rows(
        conn,
        "UPDATE archive_requests SET state = 'failed', result = $1 WHERE state = 'running' RETURNING id",
        result,
    )
    return [r["id"] for r in found]


Listener = Callable[[asyncpg.Connection, int, str, object], None]


async def listen(conn: asyncpg.Connection, callback: Listener) -> None:
    """Call ``callback`` on every notification of ``CHANNEL`` on ``conn``."""
    await conn.add_listener(CHANNEL, callback)
