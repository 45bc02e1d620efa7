"""Where headend keeps its per-user state (the embedded database, the reading spool)."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_STATE_DIR = Path("/var/lib/headend")


def state_dir() -> Path:
    """The state directory: ``$HEADEND_STATE_DIR``, else ``/var/lib/headend`` for root, else XDG state.

    Root gets the system location because root's home is not traversable by the unprivileged
    user the embedded PostgreSQL server runs as.
    """
    explicit = os.environ.get("HEADEND_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base.absolute() / "headend"
