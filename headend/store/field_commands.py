"""What a field switch reports: its command's end state, evidence and last error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """One command as the field engineer sees it after running it."""

    command_id: int
    state: str
    evidence: dict[str, Any]
    last_error: str | None


async def command_outcome(conn: asyncpg.Connection, command_id: int) -> CommandOutcome:
    """The command's state, evidence and last error."""
    row = await conn.fetchrow(
        "SELECT state::text AS state, evidence::text AS evidence, last_error FROM commands WHERE id = $1",
        command_id,
    )
    if row is None:
        raise LookupError(f"no command {command_id}")
    return CommandOutcome(command_id, row["state"], json.loads(row["evidence"]), row["last_error"])
