"""``headend concentrator archive push`` of a dial-in concentrator through the running daemon, which
holds its connection (migration 0040).

The signed-in operator's request to read the archive goes into ``archive_requests``; the daemon
(:mod:`headend.concentrators.requests`) answers with the diff, which is shown (``--dry-run`` stops
there, nothing is sent); once the operator agrees (or ``--yes``) a push request carries the very rows
shown, and its outcome (pushed, read back) is printed. Each request waits ``--wait`` seconds for
the daemon (LISTEN, with a look every second); one still unclaimed then is marked expired by this
command, nothing sent, and said in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from headend.drivers.gdw1376_terminal import ArchivePoint
from headend.operators import Operator
from headend.store.archive_requests import (
    ArchiveRequest,
    ArchiveRow,
    expire_request,
    get_request,
    insert_request,
    listen,
)
from headend.store.concentrators import channel_of, channel_points

EDITIONS = {"dlt645-2007": 2007, "dlt645-1997": 1997}
LOOK_EVERY_S = 1.0  # a look at the request between notifications
RUNNING_GRACE_S = 120.0  # beyond --wait for a request the daemon is working


class ArchiveCommandError(Exception):
    """A failure to report as one line (exit code 2)."""


def plan(writes: int, deletes: list[tuple[int, str]]) -> str:
    """What a push would change, in one line (``deletes``: pn and address of each record deleted)."""
    deleted = ", ".join(f"pn {pn} ({address})" for pn, address in deletes) or "none"
    return f"the push writes {writes} record(s) and deletes {len(deletes)}: {deleted}"


async def inventory_of(conn: asyncpg.Connection, channel: str) -> tuple[int, str, list[ArchivePoint]]:
    """The channel's id, URL and meters as its concentrator's archive should list them."""
    found = await channel_of(conn, channel)
    if found is None:
        raise ArchiveCommandError(f"no channel named {channel!r}")
    channel_id, url = found
    points = await channel_points(conn, channel_id)
    return (
        channel_id,
        url,
        [ArchivePoint(p.pn, p.port, p.address, EDITIONS.get(p.protocol, 2007)) for p in points],
    )


async def _outcome(
    conn: asyncpg.Connection,
    channel: str,
    request_id: int,
    wait: float,
    notified: asyncio.Event,
) -> ArchiveRequest:
    """Wait for the daemon to finish request ``request_id``; expire it when no daemon took it in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        notified.clear()
        request = await get_request(conn, request_id)
        assert request is not None
        if request.final:
            return request
        now = loop.time()
        if now >= deadline and request.state == "requested":
            said = (
                f"no daemon took archive request {request_id} for {channel!r} within {wait:g} s"
                " (is headend run running, with a listener this concentrator dials in to, and has it"
                " dialled in?)"
            )
            if await expire_request(conn, request_id, said):
                raise ArchiveCommandError(f"{said}: the request expired, nothing was sent")
            continue
        if now >= deadline + RUNNING_GRACE_S:
            raise ArchiveCommandError(
                f"archive request {request_id} is still being worked by the daemon after"
                f" {wait + RUNNING_GRACE_S:g} s; see it again with --dry-run"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOOK_EVERY_S):
                await notified.wait()


async def _ask(
    conn: asyncpg.Connection,
    channel: str,
    channel_id: int,
    operator: Operator,
    wanted: list[ArchiveRow],
    wait: float,
    notified: asyncio.Event,
    changes: tuple[list[ArchiveRow], list[ArchiveRow]] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Insert one request, wait for it; its id and the daemon's outcome (one line if it was not done).
    ``notified`` is set on each notification of the requests' channel on ``conn``."""
    request_id = await insert_request(conn, channel_id, operator.id, wanted, wait, changes)
    request = await _outcome(conn, channel, request_id, wait, notified)
    if request.state != "done" or request.outcome is None:
        raise ArchiveCommandError(f"archive request {request_id} {request.state}: {request.result}")
    return request_id, dict(request.outcome)


async def push_through_daemon(
    dsn: str,
    channel: str,
    sign_in: Callable[[asyncpg.Connection], Awaitable[Operator]],
    wait: float,
    confirm: Callable[[str], bool] | None,
) -> dict[str, Any]:
    """Read the archive through the daemon and, with ``confirm`` (None: a dry run) agreeing to the plan,
    push the differences through it. The result as ``archive diff|push`` prints it."""
    conn = await asyncpg.connect(dsn)
    try:
        operator = await sign_in(conn)
        channel_id, _url, points = await inventory_of(conn, channel)
        wanted = [p.to_row() for p in points]
        notified = asyncio.Event()
        await listen(conn, lambda *_args: notified.set())
        request_id, read = await _ask(conn, channel, channel_id, operator, wanted, wait, notified)
        writes, deletes = read.pop("writes"), read.pop("deletes")
        assert isinstance(writes, list) and isinstance(deletes, list)
        result: dict[str, Any] = {"channel": channel, "request": request_id, **read}
        if read["agrees"]:
            return result
        result["plan"] = plan(len(writes), [(int(r["pn"]), str(r["address"])) for r in deletes])
        if confirm is None:
            return result
        if not confirm(result["plan"]):
            raise ArchiveCommandError("archive push declined; nothing was written")
        request_id, pushed = await _ask(
            conn, channel, channel_id, operator, wanted, wait, notified, (writes, deletes)
        )
        result |= {"request": request_id, "pushed": pushed["pushed"], "after": pushed["after"]}
        result["agrees"] = pushed["agrees"]
        return result
    finally:
        await conn.close()
