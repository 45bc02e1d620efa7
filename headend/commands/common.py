"""What every database command shares: the ``--dsn`` option, the one connection helper and the one
error helper (a one-line message on stderr, exit code != 0, no traceback)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import asyncpg
import typer

from headend.config import ConfigError, HeadendConfig, load_config
from headend.store.dsn import resolve_dsn
from headend.store.embedded import EmbeddedPostgresError

T = TypeVar("T")

Dsn = Annotated[
    str | None, typer.Option("--dsn", help="PostgreSQL DSN (default: $HEADEND_DSN, else embedded server).")
]
ConfigPath = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file (default: $HEADEND_CONFIG, else defaults).")
]


def fail(message: str, *, code: int = 1, prefix: str = "error: ") -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    typer.echo(f"{prefix}{message}", err=True)
    raise typer.Exit(code)


def chosen_config(path: Path | None) -> HeadendConfig:
    """The configuration from ``--config``, else ``$HEADEND_CONFIG``, else the defaults (a bad file is
    one error line)."""
    from_env = path is None and bool(os.environ.get("HEADEND_CONFIG"))
    chosen = path or (Path(os.environ["HEADEND_CONFIG"]) if from_env else None)
    try:
        return load_config(chosen)
    except ConfigError as exc:
        fail(f"HEADEND_CONFIG: {exc}" if from_env else str(exc))


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
