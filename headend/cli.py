"""The ``headend`` command line: a thin typer application that wires up the command modules."""

from __future__ import annotations

import typer

from headend import __version__

app = typer.Typer(
    name="headend",
    help="Head-end system for DL/T 645 and Modbus electricity meters.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """Head-end system for DL/T 645 and Modbus electricity meters."""


@app.command()
def version() -> None:
    """Print the headend version."""
    typer.echo(__version__)


def _register_commands() -> None:
    """Attach every command module to the application (one line per module)."""
    from headend.commands import field as field_commands
    field_commands.register(app)
    from headend.commands import sim as sim_commands
    sim_commands.register(app)
    from headend.commands import decode as decode_commands
    decode_commands.register(app)
    from headend.commands import db as db_commands
    db_commands.register(app)
    from headend.commands import inventory as inventory_commands
    inventory_commands.register(app)
    from headend.commands import run as run_commands
    run_commands.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
