"""Read-only queries behind the web console's VEE holds and tariffs pages (run under the reporting
login): the open holds with their notes, the holds resolved lately, and the tariffs with their price
versions and time-of-use revisions."""

from __future__ import annotations

import asyncpg

Row = dict[str, object]

_OPEN = """
SELECT h.id, coalesce(m.name, m.address) AS meter, q.name AS quantity, h.rule, h.reason, h.first_ts,
       h.previous_value, h.value, h.opened_at, a.number AS account,
       coalesce((SELECT jsonb_agg(jsonb_build_object('operator', n.operator, 'note', n.note,
                                                     'noted_at', n.noted_at) ORDER BY n.id)
                 FROM vee_hold_notes n WHERE n.hold_id = h.id), '[]')::text AS notes
FROM vee_holds h JOIN meters m ON m.id = h.meter_id JOIN quantities q ON q.id = h.quantity_id
LEFT JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL
LEFT JOIN accounts a ON a.id = x.account_id
WHERE h.resolved_at IS NULL ORDER BY h.id
"""

_RESOLVED = """
SELECT h.id, coalesce(m.name, m.address) AS meter, q.name AS quantity, h.rule, h.reason, h.opened_at,
       h.resolved_at, h.resolution, h.resolved_by, h.resolution_reason
FROM vee_holds h JOIN meters m ON m.id = h.meter_id JOIN quantities q ON q.id = h.quantity_id
WHERE h.resolved_at IS NOT NULL ORDER BY h.resolved_at DESC, h.id DESC LIMIT $1
"""


async def open_holds(conn: asyncpg.Connection) -> list[Row]:
    """Every unresolved hold with its meter, register, account and notes (JSON text), oldest first."""
    return [dict(r) for r in await conn.fetch(_OPEN)]


async def resolved_holds(conn: asyncpg.Connection, limit: int = 50) -> list[Row]:
    """The ``limit`` holds resolved last, newest first, with who resolved them how and why."""
    return [dict(r) for r in await conn.fetch(_RESOLVED, limit)]


_TARIFFS = """
SELECT t.name, t.kind, t.currency, t.created_at,
       (SELECT count(*) FROM accounts a WHERE a.tariff_id = t.id) AS accounts,
       (SELECT count(DISTINCT p.effective_from) FROM tariff_prices p WHERE p.tariff_id = t.id)
         + (SELECT count(*) FROM tariff_revisions r WHERE r.tariff_id = t.id) AS versions
FROM tariffs t ORDER BY t.name
"""

_TARIFF = """
SELECT t.name, t.kind, t.currency, t.created_at, t.definition::text AS definition,
       (SELECT count(*) FROM accounts a WHERE a.tariff_id = t.id) AS accounts,
       coalesce((SELECT jsonb_agg(jsonb_build_object('register', p.register, 'price', p.price::text,
                                                     'from', p.effective_from)
                                  ORDER BY p.effective_from, p.register)
                 FROM tariff_prices p WHERE p.tariff_id = t.id), '[]')::text AS prices,
       coalesce((SELECT jsonb_agg(jsonb_build_object('from', r.effective_from, 'definition', r.definition)
                                  ORDER BY r.effective_from)
                 FROM tariff_revisions r WHERE r.tariff_id = t.id), '[]')::text AS revisions
FROM tariffs t WHERE t.name = $1
"""


async def tariffs(conn: asyncpg.Connection) -> list[Row]:
    """Every tariff: kind, currency, how many accounts are on it and how many versions it has."""
    return [dict(r) for r in await conn.fetch(_TARIFFS)]


async def tariff(conn: asyncpg.Connection, name: str) -> Row | None:
    """One tariff with its first definition, register prices and revisions (JSON texts)."""
    found = await conn.fetchrow(_TARIFF, name)
    return None if found is None else dict(found)
