"""Running ``headend`` in-process through its real entry point, and what a refused input must look like."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import asyncpg

from tests.support.cli import headend_in_process
from tests.support.postgres import PgServer, run_sync

# rows whose count must not change when an input is refused
TABLES = (
    "channels",
    "meters",
    "accounts",
    "payments",
    "ledger",
    "meter_replacements",
    "commands",
    "meter_requests",
)


@dataclass(frozen=True)
class Outcome:
    """Exit code and output of one ``headend`` run."""

    code: int
    out: str
    err: str


def headend(*args: str, env: Mapping[str, str] | None = None) -> Outcome:
    """Run ``headend ARGS`` in this process as the console script does (see ``tests.support.cli``)."""
    return Outcome(*headend_in_process(*args, env=env))


def assert_refused(outcome: Outcome, code: int, message: str) -> None:
    """One precise line on stderr containing ``message``, exit ``code``, no traceback anywhere."""
    text = outcome.out + outcome.err
    assert "Traceback" not in text, text
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    assert message in lines[0], f"{message!r} not in {lines[0]!r}"
    assert outcome.code == code, (outcome.code, lines[0])


async def row_counts(dsn: str) -> dict[str, int]:
    """Rows per table of :data:`TABLES`."""
    conn = await asyncpg.connect(dsn)
    try:
        return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    finally:
        await conn.close()


@contextlib.contextmanager
def module_database(server: PgServer) -> Iterator[str]:
    """A fresh migrated database shared by one module's cases (they must not change it)."""
    name = run_sync(server.create_database)
    try:
        yield server.dsn(name)
    finally:
        run_sync(lambda: server.drop_database(name))
