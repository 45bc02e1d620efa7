"""Channel URLs: where a bus is and how its line is set up.

``serial:///dev/ttyUSB0?baud=2400&parity=E&bytesize=8&stopbits=1``, ``tcp://10.0.0.5:8899`` (a
transparent serial server / DTU; ``?baud=`` tells the line speed behind it for timeouts),
``modbus-tcp://host:502``, ``rtu-over-tcp://host:4001`` and ``dtu://DTU-0001?baud=2400&parity=E`` (the
bus behind a cellular DTU that dials in to a listener and registers with that id; see
:mod:`headend.transport.listener`). Query options common to all:
``gap_ms`` (inter-frame gap), ``turnaround_ms`` (meter response allowance), ``retries``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

SCHEMES = ("serial", "tcp", "modbus-tcp", "rtu-over-tcp", "dtu")
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
DEFAULT_PORTS = {"modbus-tcp": 502}


class ChannelUrlError(ValueError):
    """A channel URL that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """A parsed channel URL."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""
    identity: str = ""  # dtu://: the registration id the device dials in with
    baud: int = 2400
    parity: str = "E"
    bytesize: int = 8
    stopbits: int = 1
    gap_s: float = 0.05
    turnaround_s: float = 0.5
    retries: int = 1

    @property
    def bits_per_char(self) -> int:
        """Start + data + parity + stop bits of one character on the line."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the line."""
        return self.bits_per_char / self.baud

    @property
    def label(self) -> str:
        """A short name for logs and metrics (no credentials are ever part of a channel URL)."""
        if self.scheme == "serial":
            return self.path
        if self.scheme == "dtu":
            return f"dtu://{self.identity}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_channel_url(url: str) -> ChannelConfig:
    """Parse and validate a channel URL; raises ChannelUrlError with the offending part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ChannelUrlError(
            f"unsupported channel scheme {parts.scheme!r} in {url!r}; use {', '.join(SCHEMES)}"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    options: dict[str, object] = {}
    try:
        for key, cast in (("baud", int), ("bytesize", int), ("stopbits", int), ("retries", int)):
            if key in query:
                options[key] = cast(query.pop(key))
        if "parity" in query:
            options["parity"] = query.pop("parity").upper()
        if "gap_ms" in query:
            options["gap_s"] = float(query.pop("gap_ms")) / 1000
        if "turnaround_ms" in query:
            options["turnaround_s"] = float(query.pop("turnaround_ms")) / 1000
    except ValueError as exc:
        raise ChannelUrlError(f"bad number in {url!r}: {exc}") from None
    if query:
        raise ChannelUrlError(f"unknown channel options {sorted(query)} in {url!r}")
    if options.get("parity", "E") not in ("N", "E", "O"):
        raise ChannelUrlError(f"parity must be N, E or O in {url!r}")
    if scheme == "serial":
        if not parts.path:
            raise ChannelUrlError(f"serial URL needs a device path, e.g. serial:///dev/ttyUSB0, got {url!r}")
        return ChannelConfig(scheme, path=parts.path, **options)  # type: ignore[arg-type]
    if scheme == "dtu":
        identity = parts.netloc + parts.path  # as registered: case kept, no host normalisation
        if not IDENTITY_RE.match(identity):
            raise ChannelUrlError(
                f"dtu URL needs the registration id (letters, digits, _.:-, up to 64), "
                f"e.g. dtu://DTU-0001?baud=2400, got {url!r}"
            )
        return ChannelConfig(scheme, identity=identity, **options)  # type: ignore[arg-type]
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise ChannelUrlError(f"bad port in {url!r}") from None
    if not parts.hostname or not port:
        raise ChannelUrlError(f"{scheme} URL needs host and port, e.g. {scheme}://10.0.0.5:8899, got {url!r}")
    return ChannelConfig(scheme, host=parts.hostname, port=port, **options)  # type: ignore[arg-type]
