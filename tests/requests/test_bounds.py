"""Meter requests in the database (migration 0054), under the desk's login: a viewer is refused; the
open requests per operator and per channel and a re-collection's length are bounded by the
``[requests]`` values the daemon published, each refusal naming its bound; only the requester (or an
admin) cancels; nobody but the daemon claims or finishes one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headend.operators import authenticate
from headend.store.meter_requests import (
    cancel_request,
    claim_request,
    create_read_request,
    create_recollect_request,
    get_request,
    publish_limits,
)
from tests.support.logins import daemon_dsn, desk_dsn
from tests.support.operators import PASSWORD, add_operators

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def meters(pg_dsn: str) -> AsyncIterator[dict[str, int]]:
    """Two channels (bus-a with two meters, bus-b with one) and operators 41 (operator), 42 (operator),
    43 (viewer), 44 (admin); ids by name. The daemon published per_operator 2, per_channel 3, 10 days."""
    owner = await asyncpg.connect(pg_dsn)
    await add_operators(owner, o41="operator", o42="operator", o43="viewer", o44="admin")
    ids: dict[str, int] = {}
    for channel in ("bus-a", "bus-b"):
        ids[channel] = await owner.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:1') RETURNING id",
            channel,
        )
    for name, address, channel in (("m1", "1", "bus-a"), ("m2", "2", "bus-a"), ("m3", "3", "bus-b")):
        ids[name] = await owner.fetchval(
            "INSERT INTO meters (name, protocol, address, model, channel_id)"
            " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic', $3) RETURNING id",
            name,
            address.zfill(12),
            ids[channel],
        )
    await owner.close()
    daemon = await asyncpg.connect(daemon_dsn(pg_dsn))
    await publish_limits(daemon, {"per_operator": 2, "per_channel": 3, "max_range_days": 10})
    await daemon.close()
    yield ids


async def desk(pg_dsn: str, operator: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(desk_dsn(pg_dsn))
    await authenticate(conn, operator, PASSWORD, None)
    return conn


async def test_a_viewer_is_refused_by_the_database(pg_dsn: str, meters: dict[str, int]) -> None:
    viewer = await desk(pg_dsn, "43")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await create_read_request(viewer, meters["m1"], "43")
        assert str(refused.value) == "a meter request needs an authenticated operator with the operator role"
        assert await viewer.fetchval("SELECT count(*) FROM meter_requests") == 0
    finally:
        await viewer.close()


async def test_bounds_per_operator_per_channel_and_range(pg_dsn: str, meters: dict[str, int]) -> None:
    first, second = await desk(pg_dsn, "41"), await desk(pg_dsn, "42")
    try:
        one = await create_read_request(first, meters["m1"], "41", ["energy_import_kwh"])
        await create_recollect_request(first, meters["m2"], "41", T0, T0 + timedelta(days=10))
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await create_read_request(first, meters["m3"], "41")
        assert str(refused.value) == (
            "meter request: operator 41 already has 2 open request(s), at most 2 ([requests] per_operator)"
        )
        await create_read_request(second, meters["m1"], "42")
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await create_read_request(second, meters["m2"], "42")
        assert str(refused.value) == (
            "meter request: channel bus-a already has 3 open request(s), at most 3 ([requests] per_channel)"
        )
        await create_read_request(second, meters["m3"], "42")  # another channel
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await create_recollect_request(second, meters["m3"], "42", T0, T0 + timedelta(days=10, hours=1))
        assert str(refused.value) == (
            "meter request: a re-collection covers at most 10 days ([requests] max_range_days),"
            " this one 10 days 01:00:00"
        )
        # a cancelled request is no longer open: its operator may ask again
        assert await cancel_request(first, one, "changed my mind")
        await create_read_request(first, meters["m3"], "41")
        cancelled = await get_request(first, one)
        assert cancelled is not None
        assert (cancelled.state, cancelled.reason) == ("cancelled", "changed my mind")
        audit = await first.fetch(
            "SELECT actor, action FROM audit_log WHERE entity = 'meter_request' AND entity_id = $1"
            " ORDER BY id",
            str(one),
        )
        assert [(r["actor"], r["action"]) for r in audit] == [
            ("41", "meter_request.requested"),
            ("41", "meter_request.cancelled"),
        ]
    finally:
        await first.close()
        await second.close()


async def test_only_the_requester_or_an_admin_cancels_and_only_the_daemon_claims(
    pg_dsn: str, meters: dict[str, int]
) -> None:
    first, second, admin = await desk(pg_dsn, "41"), await desk(pg_dsn, "42"), await desk(pg_dsn, "44")
    daemon = await asyncpg.connect(daemon_dsn(pg_dsn))
    try:
        mine = await create_read_request(first, meters["m1"], "41")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await cancel_request(second, mine, "not mine")
        assert str(refused.value) == (
            f"cancelling meter request {mine} of operator 41 needs an authenticated operator"
            " with the admin role"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await claim_request(first, mine)
        assert str(refused.value) == f"meter request {mine}: only the daemon moves it to running"
        assert await cancel_request(admin, mine, "by the admin")
        again = await create_read_request(first, meters["m1"], "41")
        assert await claim_request(daemon, again)
        assert not await cancel_request(first, again, "too late")  # running: not cancelled
        request = await get_request(first, again)
        assert request is not None and request.state == "running" and request.channel == "bus-a"
    finally:
        for conn in (first, second, admin, daemon):
            await conn.close()
