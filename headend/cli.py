"""The ``headend`` command line: a thin typer application naming the command modules, each imported
only when one of its commands runs."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import ClassVar

import asyncpg
import typer

from headend import __version__
from headend.commands.app import CommandGroup
from headend.commands.lazy import LazyCommands
from headend.store.dsn import DsnError, dsn_source
from headend.store.embedded import EmbeddedPostgresError


class HeadendCommands(LazyCommands):
    """Every top-level command and the modules under headend/commands/ that register it, in the order
    ``headend --help`` lists them."""

    command_modules: ClassVar[Mapping[str, str]] = {
        "demo": "demo",
        "read": "field",
        "switch": "field",
        "clock": "field",
        "profile": "field",
        "scan": "field",
        "listen": "listen",
        "sim": "sim",
        "decode": "decode",
        "db": "db",
        "inventory": "inventory",
        "lineloss": "lineloss",
        "exceptions": "exceptions",
        "export": "export",
        "meters": "meters",
        "readings": "readings",
        "report": "report",
        "channels": "channels",
        "cluster": "cluster",
        "run": "run",
        "billing": "billing",
        "accounts": "accounts",
        "tariffs": "tariffs",
        "params": "params",
        "commands": "commands",
        "operators": "operators",
        "concentrator": "concentrator",
        "requests": "requests",
        "web": "web",
    }


app = CommandGroup(
    name="headend",
    help="Head-end system for DL/T 645 and Modbus electricity meters.",
    no_args_is_help=True,
    add_completion=False,
    cls=HeadendCommands,
)


@app.callback()
def root() -> None:
    """Head-end system for DL/T 645 and Modbus electricity meters."""


@app.command()
def version() -> None:
    """Print the headend version."""
    typer.echo(__version__)


# failures to reach or use the configured database: one line naming where the DSN came from
DATABASE_ERRORS = (
    ConnectionError,
    socket.gaierror,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.CannotConnectNowError,
)


def main() -> None:
    """Console-script entry point: expected failures end as one line on stderr, exit code 1."""

    try:
        app()
    except (DsnError, EmbeddedPostgresError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (*DATABASE_ERRORS, FileNotFoundError) as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename is not None:
            raise  # a file the command was given: its own error, not the database's
        explicit = "--dsn" in sys.argv[1:] or any(a.startswith("--dsn=") for a in sys.argv[1:])
        source = dsn_source("given" if explicit else None)
        said = (
            "no server is running at its socket (start the embedded one with `headend db start`)"
            if isinstance(exc, FileNotFoundError)  # a unix socket that is not there: a stopped server
            else exc or type(exc).__name__
        )
        typer.echo(f"error: database from {source}: {said}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
