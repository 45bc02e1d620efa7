"""Second-operator approval of relay commands: the batch awaiting approval and approving it."""

from __future__ import annotations

import asyncpg

from headend.store.audit import audit

_AWAITING = """
SELECT c.id, c.meter_id, coalesce(m.name, m.address) AS meter, c.action, c.cause, c.operator, c.created_at
FROM commands c JOIN meters m ON m.id = c.meter_id
WHERE c.state = 'pending' AND c.requires_approval AND c.approved_by IS NULL
ORDER BY c.id"""


async def awaiting_approval(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Pending commands that wait for a second operator, oldest first."""
    return list(await conn.fetch(_AWAITING))


async def approval_of(conn: asyncpg.Connection, command_id: int) -> list[str] | None:
    """None when command ``command_id`` needs no approver, else who may approve it: the active
    operators holding ``approver`` other than its creator (``id (name)``), possibly none yet."""
    row = await conn.fetchrow(
        """SELECT c.requires_approval AND c.approved_by IS NULL AS waits,
                  array(SELECT o.id || ' (' || o.name || ')' FROM operators o
                        WHERE o.active AND 'approver' = ANY (o.roles) AND o.id IS DISTINCT FROM c.operator
                        ORDER BY o.id) AS approvers
           FROM commands c WHERE c.id = $1""",
        command_id,
    )
    if row is None or not row["waits"]:
        return None
    return list(row["approvers"])


class BatchChanged(RuntimeError):
    """Some commands of the batch are no longer awaiting approval; nothing was approved."""


async def approve(conn: asyncpg.Connection, command_ids: list[int], approver: str, reason: str) -> list[int]:
    """Approve exactly ``command_ids`` as ``approver`` in one transaction, all or none.

    Raises ``BatchChanged`` if one is no longer pending approval; the database refuses the whole batch
    if the approver created one of them (``CheckViolationError``), is not an approver, or not the
    operator authenticated on ``conn`` (``InsufficientPrivilegeError``)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('headend.actor', $1, true)", approver)
        rows = await conn.fetch(
            """UPDATE commands SET approved_by = $2
               WHERE id = ANY($1::bigint[]) AND requires_approval AND approved_by IS NULL
                 AND state = 'pending'
               RETURNING id""",
            command_ids,
            approver,
        )
        approved = sorted(int(r["id"]) for r in rows)
        if approved != sorted(command_ids):
            gone = sorted(set(command_ids) - set(approved))
            raise BatchChanged(f"commands {', '.join(map(str, gone))} are no longer awaiting approval")
        for command_id in approved:
            await audit(conn, approver, "command.approved", "command", command_id, reason)
    return approved
