"""Read-only queries behind the console's parameter-campaign pages (run under the reporting login):
every campaign with its meters counted by state, and one campaign's meters, failed ones first."""

from __future__ import annotations

import asyncpg

Row = dict[str, object]

# the meters of a campaign counted by state, one column each, and their total
_COUNTS = """
count(x.meter_id) AS total,
count(x.meter_id) FILTER (WHERE x.state = 'pending') AS pending,
count(x.meter_id) FILTER (WHERE x.state = 'written') AS written,
count(x.meter_id) FILTER (WHERE x.state = 'verified') AS verified,
count(x.meter_id) FILTER (WHERE x.state = 'skipped') AS skipped,
count(x.meter_id) FILTER (WHERE x.state = 'failed') AS failed
"""

_CAMPAIGN = f"""
SELECT c.id, c.name, s.name AS set_name, s.version AS set_version, c.state, c.switch_at, c.windows,
       c.max_attempts, c.created_by, c.created_at, c.approved_by, c.approved_at, {_COUNTS}
FROM tou_campaigns c JOIN tou_parameter_sets s ON s.id = c.set_id
LEFT JOIN tou_campaign_meters x ON x.campaign_id = c.id
"""

_CAMPAIGNS = f"{_CAMPAIGN} GROUP BY c.id, s.id ORDER BY c.id DESC LIMIT $1"

_ONE = f"{_CAMPAIGN} WHERE c.name = $1 GROUP BY c.id, s.id"

# failed first (they need someone), then the ones still in progress, then the settled ones
_METERS = """
SELECT m.name, m.address, ch.name AS channel, x.selected_by, x.state, x.attempts, x.reason,
       CASE WHEN x.attempts > 0 THEN x.updated_at END AS last_attempt_at
FROM tou_campaign_meters x JOIN meters m ON m.id = x.meter_id JOIN channels ch ON ch.id = m.channel_id
WHERE x.campaign_id = $1
ORDER BY CASE x.state WHEN 'failed' THEN 0 WHEN 'written' THEN 1 WHEN 'pending' THEN 2
                      WHEN 'skipped' THEN 3 ELSE 4 END, m.address
LIMIT $2 OFFSET $3
"""


async def campaigns(conn: asyncpg.Connection, limit: int = 200) -> list[Row]:
    """The newest ``limit`` campaigns: set, state, who created and approved them, and their meters
    counted by state (``total``, ``pending``, ``written``, ``verified``, ``skipped``, ``failed``)."""
    return [dict(r) for r in await conn.fetch(_CAMPAIGNS, limit)]


async def campaign(conn: asyncpg.Connection, name: str) -> Row | None:
    """One campaign as ``campaigns`` lists it, or None."""
    found = await conn.fetchrow(_ONE, name)
    return None if found is None else dict(found)


async def meters(conn: asyncpg.Connection, campaign_id: int, limit: int, offset: int = 0) -> list[Row]:
    """A page of the campaign's meters (name, address, channel, state, attempts, reason, the time of
    the last attempt), failed first, then written, pending, skipped, verified; by address within."""
    return [dict(r) for r in await conn.fetch(_METERS, campaign_id, limit, offset)]
