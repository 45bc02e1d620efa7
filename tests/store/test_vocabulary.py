"""The shared vocabulary (headend.vocabulary) is spelled exactly as the migrated database spells it."""

from __future__ import annotations

import re

import asyncpg

from headend.vocabulary import (
    COMMAND_STATES,
    OPEN_COMMAND_STATES,
    READING_QUALITIES,
    RECONNECT_MODES,
    RECONNECT_OPERATION,
    RELAY_ACTIONS,
    SWITCH_OPERATIONS,
)


async def _enum(conn: asyncpg.Connection, name: str) -> tuple[str, ...]:
    return tuple(await conn.fetchval(f"SELECT enum_range(NULL::{name})::text[]"))


async def test_enums_match_the_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await _enum(conn, "reading_quality") == READING_QUALITIES
        assert await _enum(conn, "command_state") == COMMAND_STATES
        index = await conn.fetchval("SELECT pg_get_indexdef('commands_one_open_per_meter'::regclass)")
        assert all(f"'{state}'" in index for state in OPEN_COMMAND_STATES)
    finally:
        await conn.close()


async def test_relay_actions_are_the_ones_the_commands_table_accepts(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        check = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'commands'::regclass AND pg_get_constraintdef(oid) LIKE '%action%'"
        )
        assert sorted(re.findall(r"'([a-z_]+)'", check)) == sorted(RELAY_ACTIONS)
    finally:
        await conn.close()


async def test_reconnect_modes_are_the_ones_accounts_and_commands_accept(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        for table in ("accounts", "commands"):
            check = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = $1::regclass AND pg_get_constraintdef(oid) LIKE '%reconnect_mode%'",
                table,
            )
            assert sorted(re.findall(r"'([a-z_]+)'", check)) == sorted(RECONNECT_MODES), table
        assert set(RECONNECT_OPERATION) == set(RECONNECT_MODES)
        assert set(RECONNECT_OPERATION.values()) <= set(SWITCH_OPERATIONS)
    finally:
        await conn.close()
