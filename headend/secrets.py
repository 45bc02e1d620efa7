"""Meter passwords: from a secrets TOML file or the environment, never from code, never printed.

File (path from the daemon config ``[secrets] file``, ``--secrets`` or ``$HEADEND_SECRETS_FILE``)::

    [default]
    password_level = 2
    password = "123456"

    [meters."000012345678"]
    password_level = 4
    password = "654321"

    [concentrators."0314-25394"]                 # Q/GDW 1376.1 PW (AFN 04/05/10): 32 hex digits
    pw = "00000000000000000000000000000000"
    [concentrators.default]
    pw = "..."

Environment: ``HEADEND_METER_PASSWORD`` (+ ``HEADEND_METER_PASSWORD_LEVEL``, default 2) applies to
every meter without its own entry; ``HEADEND_CONCENTRATOR_PW`` to every concentrator without one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.gdw1376 import Address, GDW1376Error


@dataclass(frozen=True, slots=True)
class Credentials:
    """Meter password and level for writes and relay control; never printed."""

    level: int
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"level {self.level:02d} password ******"


class SecretsError(ValueError):
    """The secrets file is unreadable or malformed (the message never contains a password)."""


class MeterSecrets:
    """Per-meter credentials with a default; ``repr`` shows no secret."""

    def __init__(
        self,
        default: Credentials | None = None,
        meters: dict[str, Credentials] | None = None,
        concentrators: dict[str, bytes] | None = None,
    ) -> None:
        self._default = default
        self._meters = meters or {}
        self._concentrators = concentrators or {}

    def __repr__(self) -> str:
        return f"MeterSecrets(default={'set' if self._default else 'none'}, meters={len(self._meters)})"

    def credentials_for(self, address: str) -> Credentials | None:
        """The credentials for one meter address, or the default."""
        return self._meters.get(address, self._default)

    def concentrator_pw(self, key: str) -> bytes | None:
        """The 16-byte PW of a concentrator (region-terminal key), its default, or None."""
        return self._concentrators.get(key, self._concentrators.get("default"))

    @classmethod
    def load(cls, path: str | Path | None = None) -> MeterSecrets:
        """From the file (if given or in ``$HEADEND_SECRETS_FILE``) and the environment."""
        default = _from_env()
        meters: dict[str, Credentials] = {}
        concentrators: dict[str, bytes] = {}
        env_pw = os.environ.get("HEADEND_CONCENTRATOR_PW")
        if env_pw:
            concentrators["default"] = _pw(env_pw, "HEADEND_CONCENTRATOR_PW")
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
            for key, entry in document.get("concentrators", {}).items():
                section = f"{path}: [concentrators.{key}]"
                if not isinstance(entry, dict) or "pw" not in entry:
                    raise SecretsError(f"{section}: needs pw (32 hex digits)")
                concentrators[_concentrator_key(str(key), section)] = _pw(str(entry["pw"]), section)
        return cls(default, meters, concentrators)


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


def _pw(text: str, where: str) -> bytes:
    try:
        pw = bytes.fromhex(text)
    except ValueError:
        pw = b""
    if len(pw) != 16:
        raise SecretsError(f"{where}: pw must be 32 hex digits")
    return pw


def _concentrator_key(key: str, where: str) -> str:
    if key == "default":
        return key
    try:
        return Address.parse(key).key
    except GDW1376Error:
        raise SecretsError(f"{where}: not a concentrator address (0314-25394 or 8 hex digits)") from None
