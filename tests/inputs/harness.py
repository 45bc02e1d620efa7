"""Running ``headend`` in-process through its real entry point, and what a refused input must look like."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import asyncpg

from headend.cli import main
from tests.support.postgres import PgServer, run_sync

# rows whose count must not change when an input is refused
TABLES = ("channels", "meters", "accounts", "payments", "ledger", "meter_replacements", "commands")


@dataclass(frozen=True)
class Outcome:
    """Exit code and output of one ``headend`` run."""

    code: int
    out: str
    err: str


def headend(*args: str, env: Mapping[str, str] | None = None) -> Outcome:
    """Run ``headend ARGS`` as the console script does (``headend.cli.main``), capturing its output;
    with ``env``, the process environment is exactly ``env`` for the run (e.g. ``operator_env()``).

    An exception escaping ``main`` is what a user would see as a traceback: it is kept in ``err``.
    """
    out, err = io.StringIO(), io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = ["headend", *args]
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    except Exception:  # what a user would see as a traceback
        err.write(traceback.format_exc())
        code = -1
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return Outcome(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


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
