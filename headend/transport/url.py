"""Channel URLs: where a bus is and how its line is set up.

``serial:///dev/ttyUSB0?baud=2400&parity=E&bytesize=8&stopbits=1``, ``tcp://10.0.0.5:8899`` (a
transparent serial server / DTU; ``?baud=`` tells the line speed behind it for timeouts),
``modbus-tcp://host:502`` and ``rtu-over-tcp://host:4001``. Query options common to all:
``gap_ms`` (inter-frame gap), ``turnaround_ms`` (meter response allowance), ``retries``.

Q/GDW 1376.1 concentrators: ``gdw1376://0314-25394`` (a concentrator that dials in, named by its
region-terminal address A1+A2) and ``gdw1376+tcp://host:port?address=0314-25394`` (a terminal with a
fixed address that we connect to). There ``turnaround_ms`` is the concentrator's answer allowance
(network round trip; default 5 s), ``baud`` the meters' line speed behind it (for AFN 10 F1) and
``msa`` our master station address (1..127, default 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from protocols.gdw1376 import Address, GDW1376Error

SCHEMES = ("serial", "tcp", "modbus-tcp", "rtu-over-tcp", "gdw1376", "gdw1376+tcp")
CONCENTRATOR_SCHEMES = ("gdw1376", "gdw1376+tcp")
CONCENTRATOR_TURNAROUND_S = 5.0
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
    baud: int = 2400
    parity: str = "E"
    bytesize: int = 8
    stopbits: int = 1
    gap_s: float = 0.05
    turnaround_s: float = 0.5
    retries: int = 1
    terminal: str = ""  # gdw1376: the concentrator's region-terminal address (0314-25394)
    msa: int = 1  # gdw1376: our master station address

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
        if self.scheme == "gdw1376":
            return f"gdw1376://{self.terminal}"
        return self.path if self.scheme == "serial" else f"{self.scheme}://{self.host}:{self.port}"


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
    if scheme in CONCENTRATOR_SCHEMES:
        return _concentrator(url, scheme, parts.netloc, query, options)
    if query:
        raise ChannelUrlError(f"unknown channel options {sorted(query)} in {url!r}")
    if options.get("parity", "E") not in ("N", "E", "O"):
        raise ChannelUrlError(f"parity must be N, E or O in {url!r}")
    if scheme == "serial":
        if not parts.path:
            raise ChannelUrlError(f"serial URL needs a device path, e.g. serial:///dev/ttyUSB0, got {url!r}")
        return ChannelConfig(scheme, path=parts.path, **options)  # type: ignore[arg-type]
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise ChannelUrlError(f"bad port in {url!r}") from None
    if not parts.hostname or not port:
        raise ChannelUrlError(f"{scheme} URL needs host and port, e.g. {scheme}://10.0.0.5:8899, got {url!r}")
    return ChannelConfig(scheme, host=parts.hostname, port=port, **options)  # type: ignore[arg-type]


def _concentrator(
    url: str, scheme: str, netloc: str, query: dict[str, str], options: dict[str, object]
) -> ChannelConfig:
    """``gdw1376://ADDRESS`` or ``gdw1376+tcp://host:port?address=ADDRESS`` (see the module docstring)."""
    named = netloc if scheme == "gdw1376" else query.pop("address", "")
    if "msa" in query:
        try:
            options["msa"] = int(query.pop("msa"))
        except ValueError:
            raise ChannelUrlError(f"bad number in {url!r}: msa") from None
        if not 1 <= int(options["msa"]) <= 127:  # type: ignore[call-overload]
            raise ChannelUrlError(f"msa must be 1..127 in {url!r}")
    if query:
        raise ChannelUrlError(f"unknown channel options {sorted(query)} in {url!r}")
    if not named:
        example = "gdw1376+tcp://10.0.0.5:9001?address=0314-25394"
        raise ChannelUrlError(f"{scheme} URL needs the concentrator address, e.g. {example}, got {url!r}")
    try:
        terminal = Address.parse(named).key
    except GDW1376Error as exc:
        raise ChannelUrlError(f"{exc} in {url!r}") from None
    options.setdefault("turnaround_s", CONCENTRATOR_TURNAROUND_S)
    if scheme == "gdw1376":
        return ChannelConfig(scheme, terminal=terminal, **options)  # type: ignore[arg-type]
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ChannelUrlError(f"{scheme} URL needs host:port, e.g. {scheme}://10.0.0.5:9001, got {url!r}")
    return ChannelConfig(scheme, host=host.strip("[]"), port=int(port), terminal=terminal, **options)  # type: ignore[arg-type]
