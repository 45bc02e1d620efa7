"""What every database command shares: the ``--dsn`` option, the one connection helper and the one
error helper (a one-line message on stderr, exit code != 0, no traceback)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import asyncpg
import typer

from headend.store.dsn import resolve_dsn
from headend.store.embedded import EmbeddedPostgresError

T = TypeVar("T")

DsnOption = typer.Option(None, "--dsn", help="PostgreSQL DSN (default: $HEADEND_DSN, else embedded server).")


def fail(message: str, *, code: int = 1, prefix: str = "error: ") -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    typer.echo(f"{prefix}{message}", err=True)
    raise typer.Exit(code)


def target_dsn(dsn: str | None) -> str:
    """The database to use: ``--dsn``, else ``$HEADEND_DSN``, else the embedded server (started)."""
    try:
        return resolve_dsn(dsn or None)
    except EmbeddedPostgresError as exc:
        fail(str(exc))


async def _with_conn(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(dsn)
    try:
        return await work(conn)
    finally:
        await conn.close()


def run_with_conn(dsn: str | None, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on one connection to the database and close it."""
    return asyncio.run(_with_conn(target_dsn(dsn), work))
