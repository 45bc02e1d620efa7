"""Meter passwords: from a secrets TOML file or the environment, never from code, never printed.

File (path from the daemon config ``[secrets] file``, ``--secrets`` or ``$HEADEND_SECRETS_FILE``)::

    [default]
    password_level = 2
    password = "123456"

    [meters."000012345678"]
    password_level = 4
    password = "654321"

Environment: ``HEADEND_METER_PASSWORD`` (+ ``HEADEND_METER_PASSWORD_LEVEL``, default 2) applies to
every meter without its own entry.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from headend.drivers.base import Credentials


class SecretsError(ValueError):
    """The secrets file is unreadable or malformed (the message never contains a password)."""


class MeterSecrets:
    """Per-meter credentials with a default; ``repr`` shows no secret."""

    def __init__(
        self, default: Credentials | None = None, meters: dict[str, Credentials] | None = None
    ) -> None:
        self._default = default
        self._meters = meters or {}

    def __repr__(self) -> str:
        return f"MeterSecrets(default={'set' if self._default else 'none'}, meters={len(self._meters)})"

    def credentials_for(self, address: str) -> Credentials | None:
        """The credentials for one meter address, or the default."""
        return self._meters.get(address, self._default)

    @classmethod
    def load(cls, path: str | Path | None = None) -> MeterSecrets:
        """From the file (if given or in ``$HEADEND_SECRETS_FILE``) and the environment."""
        default = _from_env()
        meters: dict[str, Credentials] = {}
        where = str(path) if path else ""
        if not path and os.environ.get("HEADEND_SECRETS_FILE"):
            path = os.environ["HEADEND_SECRETS_FILE"]
            where = f"HEADEND_SECRETS_FILE={path}"
        if path:
            try:
                document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise SecretsError(f"{where}: cannot read secrets file: {exc.strerror or exc}") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise SecretsError(f"{where}: not valid TOML: {exc}") from None
            if "default" in document:
                default = _credentials(document["default"], f"{path}: [default]")
            for address, entry in document.get("meters", {}).items():
                meters[str(address)] = _credentials(entry, f"{path}: [meters.{address}]")
        return cls(default, meters)


def _credentials(entry: Any, where: str) -> Credentials:
    if not isinstance(entry, dict) or "password" not in entry:
        raise SecretsError(f"{where}: needs password (and password_level)")
    password = str(entry["password"])
    level = entry.get("password_level", 2)
    if len(password) != 6 or not password.isdigit() or not isinstance(level, int) or not 0 <= level <= 9:
        raise SecretsError(f"{where}: password must be 6 digits and password_level 0..9")
    return Credentials(level, password)


def _from_env() -> Credentials | None:
    password = os.environ.get("HEADEND_METER_PASSWORD")
    if not password:
        return None
    level = os.environ.get("HEADEND_METER_PASSWORD_LEVEL", "2")
    if not level.strip().isdigit():
        raise SecretsError(f"HEADEND_METER_PASSWORD_LEVEL must be a digit 0..9, got {level[:20]!r}")
    return _credentials(
        {"password": password, "password_level": int(level)},
        "HEADEND_METER_PASSWORD / HEADEND_METER_PASSWORD_LEVEL",
    )
