"""Channel URLs: where a bus is and how its line is set up, validated once for the CLI, import and daemon.

``serial:///dev/ttyUSB0?baud=2400&parity=E&bytesize=8&stopbits=1``, ``tcp://10.0.0.5:8899`` (a
transparent serial server / DTU; ``?baud=`` tells the line speed behind it for timeouts),
``modbus-tcp://host:502``, ``rtu-over-tcp://host:4001`` and ``dtu://DTU-0001?baud=2400&parity=E`` (the
bus behind a cellular DTU that dials in to a listener and registers with that id; see
:mod:`headend.transport.listener`). Query options common to all:
``gap_ms`` (inter-frame gap), ``turnaround_ms`` (meter response allowance), ``retries``.
:func:`check_protocol` says whether a meter protocol can run on a channel.

Q/GDW 1376.1 concentrators: ``gdw1376://0314-25394`` (a concentrator that dials in, named by its
region-terminal address A1+A2) and ``gdw1376+tcp://host:port?address=0314-25394`` (a terminal with a
fixed address that we connect to). There ``turnaround_ms`` is the concentrator's answer allowance
(network round trip; default 5 s), ``baud`` the meters' line speed behind it (for AFN 10 F1) and
``msa`` our master station address (1..127, default 1).

Dial-in channels (``dtu://``, ``gdw1376://``) take ``allow=10.64.0.0/16,10.65.0.0/16``: the source
networks (CIDR) the device may connect from; a connection naming it from elsewhere is refused.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import TypedDict
from urllib.parse import parse_qs, urlsplit

from protocols.gdw1376.address import Address
from protocols.gdw1376.errors import GDW1376Error

SCHEMES = ("serial", "tcp", "modbus-tcp", "rtu-over-tcp", "dtu", "gdw1376", "gdw1376+tcp")
CONCENTRATOR_SCHEMES = ("gdw1376", "gdw1376+tcp")
CONCENTRATOR_TURNAROUND_S = 5.0
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
DEFAULT_PORTS = {"modbus-tcp": 502}
# channels whose device connects to a listener and names itself: scheme -> the listener kind
DIALIN_SCHEMES = {"dtu": "dtu", "gdw1376": "gdw1376"}
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)
MAX_RETRIES = 10
MAX_GAP_MS = 10_000.0
MAX_TURNAROUND_MS = 60_000.0
MAX_URL_LENGTH = 1000
# which channel schemes each meter protocol can use: DL/T 645 needs raw frames (serial or a
# transparent serial server, or AFN 10 F1 forwarding through a concentrator); Modbus runs on its
# gateways and as RTU on a raw line
PROTOCOL_SCHEMES = {
    "dlt645-2007": ("serial", "tcp", "dtu", *CONCENTRATOR_SCHEMES),
    "dlt645-1997": ("serial", "tcp", "dtu", *CONCENTRATOR_SCHEMES),
    "modbus": ("serial", "tcp", "modbus-tcp", "rtu-over-tcp", "dtu"),
    "gdw1376-group": CONCENTRATOR_SCHEMES,  # a concentrator's total group (headend.drivers.gdw1376_group)
}


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
    terminal: str = ""  # gdw1376: the concentrator's region-terminal address (0314-25394)
    msa: int = 1  # gdw1376: our master station address
    allow: tuple[IPv4Network | IPv6Network, ...] = ()  # dial-in: source networks accepted (empty: any)

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
        if self.scheme in DIALIN_SCHEMES:
            return f"{self.scheme}://{self.identity}"
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def device(self) -> tuple[str, str] | None:
        """For a dial-in channel, the device it sits behind as the hub knows it: (listener kind,
        identity); None for a channel that connects out."""
        kind = DIALIN_SCHEMES.get(self.scheme)
        return None if kind is None else (kind, self.identity)

    @property
    def bus(self) -> str:
        """The physical bus: the real device path, ``host:port`` whatever the TCP scheme, or the
        identity of the device a dial-in bus sits behind (a DTU's registration id, a
        concentrator's address)."""
        if self.scheme == "serial":
            return os.path.realpath(self.path)
        if self.scheme in DIALIN_SCHEMES:
            return f"{self.scheme}:{self.identity}"
        return f"{self.host.lower()}:{self.port}"


def _integer(url: str, key: str, text: str, allowed: range | tuple[int, ...], hint: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ChannelUrlError(f"{key} must be a whole number, got {text!r} in {url!r}") from None
    if value not in allowed:
        raise ChannelUrlError(f"{key} must be {hint}, got {value} in {url!r}")
    return value


def _millis(url: str, key: str, text: str, maximum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ChannelUrlError(f"{key} must be a number of milliseconds, got {text!r} in {url!r}") from None
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise ChannelUrlError(f"{key} must be 0..{maximum:g} ms, got {text!r} in {url!r}")
    return value / 1000


class UrlOptions(TypedDict, total=False):
    """The query options of a channel URL, as ``ChannelConfig`` fields (each only when given)."""

    baud: int
    bytesize: int
    stopbits: int
    retries: int
    parity: str
    gap_s: float
    turnaround_s: float
    msa: int
    allow: tuple[IPv4Network | IPv6Network, ...]


def _options(url: str, query: dict[str, str]) -> UrlOptions:
    """The options common to all schemes, popped from ``query`` (what remains is scheme-specific)."""
    options: UrlOptions = {}
    rates = ", ".join(map(str, BAUD_RATES))
    if "baud" in query:
        options["baud"] = _integer(url, "baud", query.pop("baud"), BAUD_RATES, f"one of {rates}")
    if "bytesize" in query:
        options["bytesize"] = _integer(url, "bytesize", query.pop("bytesize"), range(5, 9), "5..8")
    if "stopbits" in query:
        options["stopbits"] = _integer(url, "stopbits", query.pop("stopbits"), (1, 2), "1 or 2")
    if "retries" in query:
        limit = range(MAX_RETRIES + 1)
        options["retries"] = _integer(url, "retries", query.pop("retries"), limit, f"0..{MAX_RETRIES}")
    if "parity" in query:
        options["parity"] = query.pop("parity").upper()
        if options["parity"] not in ("N", "E", "O"):
            raise ChannelUrlError(f"parity must be N, E or O in {url!r}")
    if "gap_ms" in query:
        options["gap_s"] = _millis(url, "gap_ms", query.pop("gap_ms"), MAX_GAP_MS)
    if "turnaround_ms" in query:
        options["turnaround_s"] = _millis(url, "turnaround_ms", query.pop("turnaround_ms"), MAX_TURNAROUND_MS)
    return options


def parse_networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``10.64.0.0/16,fd00::/8``: networks in CIDR notation; raises ValueError naming a bad one."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ip_network(item))
        except ValueError as exc:
            raise ValueError(f"bad network {item!r}: {exc}") from None
    if not networks:
        raise ValueError("no network given (CIDR, e.g. 10.64.0.0/16)")
    return tuple(networks)


def _allow(url: str, query: dict[str, str], options: UrlOptions) -> None:
    """Pop a dial-in channel's ``allow`` option into ``options``."""
    if "allow" in query:
        try:
            options["allow"] = parse_networks(query.pop("allow"))
        except ValueError as exc:
            raise ChannelUrlError(f"allow: {exc} in {url!r}") from None


def parse_channel_url(url: str) -> ChannelConfig:
    """Parse and validate a channel URL; raises ChannelUrlError with the offending part."""
    if len(url) > MAX_URL_LENGTH:
        raise ChannelUrlError(f"channel URL is {len(url)} characters long (at most {MAX_URL_LENGTH})")
    if not url.isprintable():
        raise ChannelUrlError(f"channel URL contains control characters: {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ChannelUrlError(
            f"unsupported channel scheme {parts.scheme!r} in {url!r}; use {', '.join(SCHEMES)}"
        )
    try:
        pairs = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ChannelUrlError(f"malformed options {parts.query!r} in {url!r}") from None
    query = {key: values[-1] for key, values in pairs.items()}
    options = _options(url, query)
    if scheme in DIALIN_SCHEMES:
        _allow(url, query, options)
    if scheme in CONCENTRATOR_SCHEMES:
        return _concentrator(url, scheme, parts.netloc, query, options)
    if query:
        raise ChannelUrlError(f"unknown channel options {sorted(query)} in {url!r}")
    if scheme == "serial":
        if not parts.path or parts.netloc:
            raise ChannelUrlError(f"serial URL needs a device path, e.g. serial:///dev/ttyUSB0, got {url!r}")
        return ChannelConfig(scheme, path=parts.path, **options)
    if scheme == "dtu":
        identity = parts.netloc + parts.path  # as registered: case kept, no host normalisation
        if not IDENTITY_RE.match(identity):
            raise ChannelUrlError(
                f"dtu URL needs the registration id (letters, digits, _.:-, up to 64), "
                f"e.g. dtu://DTU-0001?baud=2400, got {url!r}"
            )
        return ChannelConfig(scheme, identity=identity, **options)
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise ChannelUrlError(f"bad port in {url!r} (1..65535)") from None
    if not parts.hostname or not port:
        raise ChannelUrlError(f"{scheme} URL needs host and port, e.g. {scheme}://10.0.0.5:8899, got {url!r}")
    return ChannelConfig(scheme, host=parts.hostname, port=port, **options)


def check_protocol(protocol: str, config: ChannelConfig) -> None:
    """Raise ChannelUrlError unless meters of ``protocol`` can be read over this channel."""
    schemes = PROTOCOL_SCHEMES.get(protocol)
    if schemes is None:
        raise ChannelUrlError(f"unknown protocol {protocol!r}; use {', '.join(PROTOCOL_SCHEMES)}")
    if config.scheme not in schemes:
        raise ChannelUrlError(
            f"protocol {protocol} cannot run on a {config.scheme}:// channel"
            f" (use {', '.join(s + '://' for s in schemes)})"
        )


def _concentrator(
    url: str, scheme: str, netloc: str, query: dict[str, str], options: UrlOptions
) -> ChannelConfig:
    """``gdw1376://ADDRESS`` or ``gdw1376+tcp://host:port?address=ADDRESS`` (see the module docstring)."""
    named = netloc if scheme == "gdw1376" else query.pop("address", "")
    if "msa" in query:
        options["msa"] = _integer(url, "msa", query.pop("msa"), range(1, 128), "1..127")
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
        return ChannelConfig(scheme, identity=terminal, terminal=terminal, **options)
    host, _, port = netloc.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ChannelUrlError(f"{scheme} URL needs host:port, e.g. {scheme}://10.0.0.5:9001, got {url!r}")
    return ChannelConfig(scheme, host=host.strip("[]"), port=int(port), terminal=terminal, **options)
