"""Field-engineer commands: read, switch, clock, profile and scan one bus, through the daemon's code path.

Every command opens the channel and builds the driver exactly as the engine does
(``headend.transport.open_channel`` + ``headend.drivers.make_driver``). Meters behind a Q/GDW 1376.1
concentrator (``gdw1376+tcp://host:port?address=…``, or ``gdw1376://ADDRESS --listen HOST:PORT`` for
one that dials in, like ``dtu://ID --listen HOST:PORT`` for a DTU) need ``--port`` (the
concentrator's port of the meter); with ``--pn`` energy comes
from the concentrator's collection (AFN 0C F129), everything else is forwarded (AFN 10 F1).
``clock`` without ``--address`` on a concentrator URL is the concentrator's own clock.
"""

from __future__ import annotations

import typer

from headend.commands.field.clock import clock_command
from headend.commands.field.profile import profile_command
from headend.commands.field.read import read_command
from headend.commands.field.scan import scan_command
from headend.commands.field.switch import switch_command


def register(app: typer.Typer) -> None:
    """Attach the field commands to the CLI."""
    app.command("read")(read_command)
    app.command("switch")(switch_command)
    app.command("clock")(clock_command)
    app.command("profile")(profile_command)
    app.command("scan")(scan_command)
