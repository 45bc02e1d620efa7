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
    """Attach every command module to the application."""
    from headend.commands import (
        billing,
        channels,
        commands,
        db,
        decode,
        demo,
        field,
        inventory,
        listen,
        run,
        sim,
    )

    for module in (demo, field, listen, sim, decode, db, inventory, channels, run, billing, commands):
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
