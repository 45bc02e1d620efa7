"""What ``headend run`` checks before it starts, so a daemon that cannot work says why in one line
instead of failing later with a traceback: the spool directory is a usable directory, and every
port it is to listen on (metrics, dial-in listeners) can be bound on its address. Unusable meter
secrets do not stop it (meters are still read): :func:`secrets_problem` is warned about at start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from headend.config import HeadendConfig
from headend.config_paths import state_dir


class StartupError(ValueError):
    """The daemon cannot start with this configuration on this host; ``str()`` says why."""


def check_startup(config: HeadendConfig) -> None:
    """Raise :class:`StartupError` for the first thing that would stop the daemon from working."""
    _check_spool_dir(Path(config.database.spool_dir) if config.database.spool_dir else state_dir() / "spool")
    if config.metrics.port:
        _check_bind(config.metrics.host, config.metrics.port, "metrics")
    for index, listener in enumerate(config.listen.listeners):
        host, _, port = listener.address.rpartition(":")
        if int(port):
            _check_bind(host, int(port), f"listen.listeners[{index}]")


def _check_spool_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise StartupError(f"database.spool_dir: {path} is not a directory")
    probe = path / f".probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"database.spool_dir: cannot use {path}: {exc.strerror or exc}") from None


def _check_bind(host: str, port: int, what: str) -> None:
    """Bind ``host:port`` the way the daemon will (address reuse on), then let it go again."""
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"{what}: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise StartupError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def secrets_problem(config: HeadendConfig) -> str | None:
    """Why the meter secrets (``[secrets] file``, ``$HEADEND_SECRETS_FILE``, the environment) cannot
    be used, without any password in it; None when they can."""
    from headend.secrets import MeterSecrets, SecretsError

    try:
        MeterSecrets.load(config.secrets.file or None)
    except SecretsError as exc:
        return str(exc)
    return None
