"""SQL of time-of-use campaigns: creation with their meters, the operators' moves, the daemon's
per-meter record (attempts, outcomes) and the listings. Migration 0057 refuses every move a role may
not make (two people, states, the daemon touching only running campaigns)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from headend.store.results import Queryable, row, rows

CAMPAIGN = (
    "c.id, c.name, c.state, c.switch_at, c.max_attempts, c.created_by, c.created_at, c.approved_by,"
    " c.approved_at, c.dry_run_requested_at, c.windows, s.name AS set_name, s.version AS set_version,"
    " s.definition::text AS definition, c.targets::text AS targets"
)


async def meters_by_address(conn: asyncpg.Connection, addresses: Sequence[str]) -> dict[str, int]:
    """Meter id by address (or name) for those of ``addresses`` that exist."""
    found = await rows(
        conn,
        "SELECT id, address, name FROM meters WHERE address = ANY($1::text[]) OR name = ANY($1::text[])",
        list(addresses),
    )
    ids: dict[str, int] = {}
    for r in found:
        for key in (r["address"], r["name"]):
            if key in addresses:
                ids[key] = int(r["id"])
    return ids


_TARGETABLE = "m.protocol = 'dlt645-2007' AND m.removed_at IS NULL"

_SELECTORS = {
    "channel": "SELECT m.id FROM meters m JOIN channels c ON c.id = m.channel_id WHERE c.name = $1",
    "concentrator": "SELECT m.id FROM meters m JOIN channels c ON c.id = m.channel_id"
    " WHERE c.kind = 'gdw1376' AND (c.name = $1 OR c.address = $1)",
    "area": "SELECT m.id FROM meters m JOIN area_members a ON a.meter_id = m.id"
    " JOIN areas r ON r.id = a.area_id WHERE r.name = $1"
    " AND a.valid_from <= current_date AND (a.valid_to IS NULL OR a.valid_to > current_date)",
    "model": "SELECT m.id FROM meters m WHERE m.model = $1",
}
SELECTORS = tuple(_SELECTORS)
"""The kinds of group a campaign may target besides a list of meters."""


async def meters_selected(conn: Queryable, kind: str, value: str) -> list[int]:
    """Ids of the installed DL/T 645-2007 meters of a group (``kind`` one of ``SELECTORS``: a
    channel by name, a concentrator by channel name or terminal address, a transformer area's current
    members, a model), today's inventory; empty when there are none."""
    found = await rows(conn, f"{_SELECTORS[kind]} AND {_TARGETABLE} ORDER BY m.id", value)
    return [int(r["id"]) for r in found]


async def meters_on_channel(conn: Queryable, channel: str) -> list[int]:
    """Ids of the installed DL/T 645-2007 meters of a channel (empty for an unknown channel)."""
    return await meters_selected(conn, "channel", channel)


async def target_rows(conn: Queryable, meter_ids: Sequence[int]) -> list[asyncpg.Record]:
    """``id, address, model, channel`` of meters, in the order of ``meter_ids``."""
    return await rows(
        conn,
        "SELECT m.id, m.address, m.model, c.name AS channel FROM unnest($1::int[]) WITH ORDINALITY t(id, n)"
        " JOIN meters m ON m.id = t.id JOIN channels c ON c.id = m.channel_id ORDER BY t.n",
        list(meter_ids),
    )


async def create(
    conn: asyncpg.Connection,
    name: str,
    set_id: int,
    switch_at: datetime,
    max_attempts: int,
    operator: str,
    meters: Sequence[tuple[int, str | None]],
    windows: Sequence[str] = (),
    targets: str = "{}",
) -> int:
    """A draft campaign with its meters (pending; each ``(meter_id, selected_by)``), its write windows
    and the selection that gave the meters (``targets``: JSON text); its id."""
    campaign_id = int(
        await conn.fetchval(
            "INSERT INTO tou_campaigns (name, set_id, switch_at, max_attempts, created_by, windows, targets)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING id",
            name,
            set_id,
            switch_at,
            max_attempts,
            operator,
            list(windows),
            targets,
        )
    )
    await conn.executemany(
        "INSERT INTO tou_campaign_meters (campaign_id, meter_id, selected_by) VALUES ($1, $2, $3)",
        [(campaign_id, m, selected_by) for m, selected_by in meters],
    )
    return campaign_id


async def campaign(conn: Queryable, name: str) -> asyncpg.Record | None:
    """A campaign by name with its set (columns of ``CAMPAIGN``), or None."""
    return await row(
        conn,
        f"SELECT {CAMPAIGN} FROM tou_campaigns c JOIN tou_parameter_sets s ON s.id = c.set_id"
        " WHERE c.name = $1",
        name,
    )


async def campaigns(conn: Queryable) -> list[asyncpg.Record]:
    """Every campaign with the count of its meters by state (``counts``: JSON text)."""
    return await rows(
        conn,
        f"SELECT {CAMPAIGN}, (SELECT coalesce(jsonb_object_agg(state, n), '{{}}')::text FROM"
        " (SELECT state, count(*) AS n FROM tou_campaign_meters WHERE campaign_id = c.id GROUP BY state) x)"
        " AS counts FROM tou_campaigns c JOIN tou_parameter_sets s ON s.id = c.set_id ORDER BY c.id",
    )


async def counts(conn: Queryable, campaign_id: int) -> dict[str, int]:
    """How many of a campaign's meters are in each state."""
    found = await rows(
        conn,
        "SELECT state, count(*) AS n FROM tou_campaign_meters WHERE campaign_id = $1 GROUP BY state",
        campaign_id,
    )
    return {str(r["state"]): int(r["n"]) for r in found}


async def open_counts(conn: Queryable) -> list[asyncpg.Record]:
    """``name, state, n``: the meters per state of every running or paused campaign."""
    return await rows(
        conn,
        "SELECT c.name, x.state, count(*) AS n FROM tou_campaigns c"
        " JOIN tou_campaign_meters x ON x.campaign_id = c.id WHERE c.state IN ('running', 'paused')"
        " GROUP BY c.name, x.state",
    )


async def campaign_meters(conn: Queryable, campaign_id: int) -> list[asyncpg.Record]:
    """``meter_id, address, channel, selected_by, state, reason, attempts, dry_run, dry_run_at`` of a
    campaign's meters."""
    return await rows(
        conn,
        "SELECT x.meter_id, m.address, c.name AS channel, x.selected_by, x.state, x.reason, x.attempts,"
        " x.dry_run::text AS dry_run, x.dry_run_at"
        " FROM tou_campaign_meters x JOIN meters m ON m.id = x.meter_id"
        " JOIN channels c ON c.id = m.channel_id WHERE x.campaign_id = $1 ORDER BY m.address",
        campaign_id,
    )


async def approve(conn: asyncpg.Connection, campaign_id: int, operator: str) -> bool:
    """Approve a draft under ``operator``; False if it is no longer a draft."""
    done: str = await conn.execute(
        "UPDATE tou_campaigns SET state = 'approved', approved_by = $2, approved_at = now()"
        " WHERE id = $1 AND state = 'draft'",
        campaign_id,
        operator,
    )
    return done.endswith(" 1")


async def move(conn: asyncpg.Connection, campaign_id: int, state: str) -> None:
    """Start, pause or cancel (the database refuses a move the state does not allow)."""
    await conn.execute("UPDATE tou_campaigns SET state = $2 WHERE id = $1", campaign_id, state)


async def due_meters(
    conn: Queryable, per_channel: int, channel_id: int | None = None
) -> list[asyncpg.Record]:
    """Meters of running campaigns to try now, at most ``per_channel`` of each channel (every bus
    gets its share, however many meters other buses have due; only ``channel_id``'s when given):
    ``campaign_id, name, meter_id, channel_id, state, attempts, max_attempts, switch_at, windows,
    definition``, oldest try first."""
    return await rows(
        conn,
        "SELECT * FROM (SELECT x.campaign_id, c.name, x.meter_id, m.channel_id, x.state, x.attempts,"
        " c.max_attempts, c.switch_at, c.windows, s.definition::text AS definition, x.next_try_at,"
        " row_number() OVER (PARTITION BY m.channel_id"
        "  ORDER BY x.next_try_at, x.campaign_id, x.meter_id) AS turn"
        " FROM tou_campaign_meters x JOIN meters m ON m.id = x.meter_id"
        " JOIN tou_campaigns c ON c.id = x.campaign_id JOIN tou_parameter_sets s ON s.id = c.set_id"
        " WHERE c.state = 'running' AND x.state IN ('pending', 'written') AND x.next_try_at <= now()"
        "  AND ($2::bigint IS NULL OR m.channel_id = $2::bigint)) d"
        " WHERE turn <= $1 ORDER BY next_try_at, campaign_id, meter_id",
        per_channel,
        channel_id,
    )


async def begin_attempt(conn: asyncpg.Connection, campaign_id: int, meter_id: int) -> int | None:
    """Count one more attempt at a meter of a running campaign, before any frame goes out; the
    attempt's number, or None if the campaign is not running (any more) or the meter is settled."""
    value = await conn.fetchval(
        "UPDATE tou_campaign_meters x SET attempts = x.attempts + 1, updated_at = now()"
        " FROM tou_campaigns c WHERE c.id = x.campaign_id AND c.state = 'running'"
        " AND x.campaign_id = $1 AND x.meter_id = $2 AND x.state IN ('pending', 'written')"
        " RETURNING x.attempts",
        campaign_id,
        meter_id,
    )
    return None if value is None else int(str(value))


async def record(
    conn: asyncpg.Connection,
    campaign_id: int,
    meter_id: int,
    state: str,
    reason: str | None = None,
    retry_in_s: float | None = None,
) -> None:
    """The outcome of an attempt at a meter (``retry_in_s``: try again that much later)."""
    await conn.execute(
        "UPDATE tou_campaign_meters SET state = $3, reason = $4, updated_at = now(),"
        " next_try_at = CASE WHEN $5::float8 IS NULL THEN next_try_at"
        " ELSE now() + make_interval(secs => $5::float8) END"
        " WHERE campaign_id = $1 AND meter_id = $2",
        campaign_id,
        meter_id,
        state,
        reason,
        retry_in_s,
    )


async def defer(conn: asyncpg.Connection, campaign_id: int, meter_id: int, until: datetime) -> None:
    """Try a meter no sooner than ``until`` (its campaign's next window), no attempt counted."""
    await conn.execute(
        "UPDATE tou_campaign_meters SET next_try_at = $3 WHERE campaign_id = $1 AND meter_id = $2",
        campaign_id,
        meter_id,
        until,
    )


async def finish_settled(conn: asyncpg.Connection) -> list[str]:
    """Mark done every running campaign whose meters are all settled; their names."""
    done = await rows(
        conn,
        "UPDATE tou_campaigns c SET state = 'done' WHERE c.state = 'running' AND NOT EXISTS"
        " (SELECT 1 FROM tou_campaign_meters x"
        "  WHERE x.campaign_id = c.id AND x.state IN ('pending', 'written'))"
        " RETURNING c.name",
    )
    return [str(r["name"]) for r in done]


async def ask_dry_run(conn: asyncpg.Connection, campaign_id: int) -> None:
    """Ask the daemon to read every target and record what a write would change."""
    await conn.execute("UPDATE tou_campaigns SET dry_run_requested_at = now() WHERE id = $1", campaign_id)


async def due_dry_runs(conn: Queryable, limit: int) -> list[asyncpg.Record]:
    """Meters whose campaign asked for a dry run since their last one: ``campaign_id, name, meter_id,
    attempts, max_attempts, switch_at, definition``."""
    return await rows(
        conn,
        "SELECT x.campaign_id, c.name, x.meter_id, x.attempts, c.max_attempts, c.switch_at,"
        " s.definition::text AS definition FROM tou_campaign_meters x"
        " JOIN tou_campaigns c ON c.id = x.campaign_id JOIN tou_parameter_sets s ON s.id = c.set_id"
        " WHERE c.dry_run_requested_at IS NOT NULL AND c.state NOT IN ('done', 'cancelled')"
        " AND (x.dry_run_at IS NULL OR x.dry_run_at < c.dry_run_requested_at)"
        " ORDER BY x.campaign_id, x.meter_id LIMIT $1",
        limit,
    )


async def record_dry_run(conn: asyncpg.Connection, campaign_id: int, meter_id: int, finding: str) -> None:
    """What a dry run found at a meter (JSON text)."""
    await conn.execute(
        "UPDATE tou_campaign_meters SET dry_run = $3::jsonb, dry_run_at = now()"
        " WHERE campaign_id = $1 AND meter_id = $2",
        campaign_id,
        meter_id,
        finding,
    )
