"""A field switch (``headend switch`` with a database): the same persisted command, safety gates
(protected customer 保电, relay, enabled, one open command) and audit as a daemon command, executed and
confirmed by read-back in the engineer's own process over the channel they opened.

There is no bus-ownership handshake with a running daemon yet: the command is created with cause
``field`` and a due time ``FIELD_HOLD`` ahead, so the daemon leaves it to this process; one that ends
unconfirmed stays ``pending`` and the daemon retries it (read-back first) once it is due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from headend.control.executor import RelayDriver, execute
from headend.control.manual import ManualCommandError, request_command
from headend.store.field_commands import CommandOutcome, command_outcome

FIELD_HOLD = timedelta(minutes=10)
ACTIONS = {"off": "disconnect", "on": "reconnect", "alarm": "alarm", "alarm_release": "alarm_release"}


async def field_switch(
    conn: asyncpg.Connection,
    meter: str,
    action: str,
    *,
    operator: str,
    reason: str,
    driver: RelayDriver,
) -> CommandOutcome:
    """Record the command for ``meter`` (inventory name or address), run it on ``driver``, report it.

    ``conn`` must be authenticated as ``operator``; refusals raise ``ManualCommandError``."""
    if action not in ACTIONS:
        raise ManualCommandError(f"a recorded switch is off, on, alarm or alarm-release, not {action!r}")
    now = datetime.now(UTC)
    command_id = await request_command(
        conn,
        meter,
        ACTIONS[action],
        operator=operator,
        reason=reason,
        now=now,
        cause="field",
        due_at=now + FIELD_HOLD,
    )
    await execute(conn, command_id, lambda _meter_id: driver, actor=operator)
    return await command_outcome(conn, command_id)
