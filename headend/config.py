"""The daemon's configuration: a TOML file validated by pydantic.

``load_config(path)`` returns a :class:`HeadendConfig` or raises :class:`ConfigError` whose message
names the file, the key and the reason (``headend.toml: polling.interval: must be ...``).
"""

from __future__ import annotations

import math
import re
import socket
import tomllib
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from headend.transport.identify import parse_pattern
from headend.vocabulary import EXCEPTION_RULES, ExceptionRule, ReconnectMode
from protocols.dlt645.events import EVENT_KINDS

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DAY = 86400.0
MIN_DURATION = 0.1  # shorter periods would only spin the daemon
MAX_DURATION = 366 * DAY
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# event kinds the DL/T 645 driver can collect (headend.drivers.dlt645.EVENT_SOURCES)
DEFAULT_EVENT_KINDS = ("power_down", "relay_trip", "relay_close")
# in-daemon services the project ships; nothing else is imported and called with the engine
SERVICES = frozenset(
    {"headend.billing.service:run", "headend.control.service:run", "headend.params.runner:run"}
)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"15m"``, ``"2.5s"``, ``"1h"``, ``"1d"``, ``"300ms"``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 15m, 30s or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"must be a duration such as 15m, 30s or 1d, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    return seconds


def _seconds(value: float) -> str:
    return f"{value / DAY:g} d" if value >= DAY else f"{value:g} s"


def bounded(low: float, high: float, *, zero: bool = False) -> AfterValidator:
    """A check that a duration lies in [low, high] seconds (or is 0 when ``zero``)."""

    def check(value: float) -> float:
        if not (low <= value <= high or (zero and value == 0)):
            allowed = f"0 or {_seconds(low)}" if zero else _seconds(low)
            raise ValueError(f"must be between {allowed} and {_seconds(high)}, got {_seconds(value)}")
        return value

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration), bounded(MIN_DURATION, MAX_DURATION)]
Interval = Annotated[float, BeforeValidator(parse_duration), bounded(1.0, DAY)]
Delay = Annotated[float, BeforeValidator(parse_duration), bounded(MIN_DURATION, MAX_DURATION, zero=True)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    """Empty ``dsn``: ``$HEADEND_DSN``, else the embedded server."""

    dsn: str = ""
    spool_dir: str = ""
    spool_max_mb: int = Field(1024, gt=0, le=1 << 20)


class PollingConfig(_Section):
    interval: Interval = 900.0
    offset: Delay = 5.0
    inventory_reload: Duration = 30.0

    @field_validator("offset")
    @classmethod
    def _offset_inside_interval(cls, value: float, info: Any) -> float:
        interval = info.data.get("interval")
        if interval is not None and value >= interval:
            raise ValueError(f"must be shorter than the interval ({interval:g} s)")
        return value


def model_quantities(model: str | None) -> set[str]:
    """The quantities meter ``model`` can read (None: those of every bundled model and of the
    concentrators' curves); empty when
    ``model`` is not a model (a plan named after a model path that does not load)."""
    from protocols.gdw1376 import CURVE_KINDS
    from protocols.models import UnknownModel, load_model_data, model_names

    names = model_names() if model is None else [model]
    quantities: set[str] = set()
    if model is None:  # a concentrator's curves, read for the meters behind it
        quantities |= {kind.quantity for kind in CURVE_KINDS.values() if kind.quantity}
    for name in names:
        try:
            data = load_model_data(name)
        except (UnknownModel, OSError, ValueError):
            continue
        quantities |= set(data.get("points", {})) | set(data.get("curves", {}))
        for plan in data.get("editions", {}).values():
            quantities |= set(plan)
    return quantities


class ReadPlan(_Section):
    """What a scheduled read asks a meter for; ``gap_quantity`` decides whether an interval is missing.
    ``instantaneous`` quantities (per-phase voltage, current ... for the exception rules) are read at
    their own ``instantaneous_interval``: in the first cycle of each such interval (0: every cycle)."""

    quantities: list[str] = Field(min_length=1)
    gap_quantity: str = ""
    instantaneous: list[str] = Field(default_factory=list)
    instantaneous_interval: Delay = 0.0

    @field_validator("quantities", "instantaneous")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise ValueError(f"quantity names are lower_snake_case, got {name!r}")
        return value

    @model_validator(mode="after")
    def _apart(self) -> ReadPlan:
        both = [q for q in self.instantaneous if q in self.quantities]
        if both:
            raise ValueError(f"{both[0]!r} is in both quantities and instantaneous")
        return self

    def quantities_at(self, ts: datetime, cycle: float) -> list[str]:
        """What the read of the cycle at ``ts`` (cycles ``cycle`` seconds apart) asks for: the
        instantaneous quantities too in the first cycle of each of their intervals."""
        every = self.instantaneous_interval
        if not self.instantaneous:
            return self.quantities
        at = ts.timestamp()
        if every <= cycle or at // every != (at - cycle) // every:
            return [*self.quantities, *self.instantaneous]
        return self.quantities

    @property
    def gap_key(self) -> str:
        """The quantity whose absence marks an interval as a gap."""
        return self.gap_quantity or self.quantities[0]


class TimeoutConfig(_Section):
    """Adaptive per-meter timeout: ``rtt + 4 * deviation`` clamped to [minimum, maximum]."""

    initial: Duration = 2.0
    minimum: Duration = 0.2
    maximum: Duration = 10.0

    @field_validator("maximum")
    @classmethod
    def _ordered(cls, value: float, info: Any) -> float:
        minimum = info.data.get("minimum")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least timeouts.minimum ({minimum:g} s)")
        return value


class HealthConfig(_Section):
    quarantine_after: int = Field(3, ge=1)
    backoff: Duration = 60.0
    backoff_max: Duration = 3600.0


class BackfillConfig(_Section):
    """Gaps are looked for after each cycle, at start-up and every ``retry_every`` (meters that were down)."""

    enabled: bool = True
    lookback: Duration = 3 * 86400.0
    retry_every: Duration = 300.0
    max_intervals_per_meter: int = Field(96, ge=1)


class ClockConfig(_Section):
    """Clock checks and the correction policy (applied by headend.engine.clock, never by a driver)."""

    enabled: bool = True
    check_every: Duration = 86400.0
    max_drift: Duration = 30.0  # corrected only beyond this
    broadcast_limit: Duration = 300.0  # up to this a broadcast (0x08), beyond an addressed write
    boundary_interval: Duration = 900.0  # the meters' load-profile period ...
    boundary_guard: Duration = 60.0  # ... whose boundaries a correction keeps this far from
    midnight_guard: Duration = 300.0  # and as far from the meter's local midnight
    flag_after: int = Field(2, ge=1)

    @field_validator("boundary_guard")
    @classmethod
    def _window_left(cls, value: float, info: Any) -> float:
        interval = info.data.get("boundary_interval")
        if interval is not None and 2 * value >= interval:
            raise ValueError(f"must be under half of clock.boundary_interval ({interval:g} s)")
        return value


class RelayConfig(_Section):
    """Relay switching: how long a driver polls the status word to confirm a trip or close.

    The engine derives a control job's time limit from it (confirmation window + the exchanges'
    margins), so a slow relay is never abandoned while its driver is still confirming.
    """

    confirm_timeout: Duration = 30.0
    confirm_poll: Duration = 1.0


class EventsConfig(_Section):
    """Event collection: every ``collect_every``, the new records of ``kinds`` (any of
    protocols.dlt645.events.EVENT_KINDS; the default three cost two exchanges a meter)."""

    enabled: bool = True
    collect_every: Duration = 3600.0
    kinds: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENT_KINDS))

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(EVENT_KINDS)}")
        return value


class MetricsConfig(_Section):
    """``port = 0`` disables the HTTP endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _resolvable(cls, value: str) -> str:
        try:
            socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ValueError(f"cannot resolve host {value!r}") from None
        return value


class LoggingConfig(_Section):
    level: str = "INFO"
    format: str = Field("json", pattern="^(json|text)$")

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; use {', '.join(LOG_LEVELS)}")
        return value.upper()


class SecretsConfig(_Section):
    """Meter passwords: a TOML file readable only by the daemon, or ``$HEADEND_SECRETS_FILE``."""

    file: str = ""


class EngineConfig(_Section):
    """Extra services run inside the daemon, as ``module:function`` taking the engine (see docs)."""

    services: list[str] = Field(default_factory=list)

    @field_validator("services")
    @classmethod
    def _own_services(cls, value: list[str]) -> list[str]:
        for target in value:
            if target not in SERVICES:
                raise ValueError(f"unknown service {target!r}; available: {', '.join(sorted(SERVICES))}")
        return value


class RequestsConfig(_Section):
    """Bounds on the desk's meter requests (on-demand reads, re-collections), published by the daemon
    for the database to enforce: open requests per operator and per channel, the longest re-collection;
    ``sweep_every``: how often the daemon looks for expired requests and for requests waiting on a
    dial-in device to connect (new requests arrive by NOTIFY)."""

    per_operator: int = Field(5, ge=1, le=1000)
    per_channel: int = Field(20, ge=1, le=10000)
    max_range_days: int = Field(31, ge=1, le=366)
    sweep_every: Duration = 5.0


class CampaignsConfig(_Section):
    """Parameter campaigns in the daemon (headend.params.runner): the zone of the windows' local
    times, the peak reading windows in which no campaign writes (the midnight freeze 23:55-00:10 is
    closed always) and ``pace``: the due campaign meters a bus's lane takes at a time (one after another;
    the bus's scheduled reads go ahead of each)."""

    timezone: str = "Asia/Shanghai"
    peak_reading: list[str] = Field(default_factory=lambda: ["00:10-01:00"])
    pace: int = Field(2, ge=1, le=100)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("peak_reading")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for text in value:
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", text):
                raise ValueError(f"peak reading window {text!r}: expected HH:MM-HH:MM")
        return value


class HaConfig(_Section):
    """One active daemon per database (docs/operations.md): a standby tries the lock every ``poll``;
    the active daemon checks its lock connection every ``check`` (a reply within ``check_timeout``).
    ``fencing``: stop reading and executing as soon as that connection is lost (an active/standby
    pair); without it a lone daemon keeps reading into the spool through a database outage."""

    poll: Duration = 2.0
    check: Duration = 1.0
    check_timeout: Duration = 3.0
    fencing: bool = False


class ClusterConfig(_Section):
    """Several daemons share the channels through leases in the database (docs/scaling.md): each
    renews its membership and leases every ``renew``; a lease lasts ``lease`` (the take-over bound
    after a daemon dies is about ``lease + renew``). Off: one daemon (or an active/standby pair)
    reads every channel."""

    enabled: bool = False
    renew: Duration = 2.0
    lease: Duration = 8.0

    @model_validator(mode="after")
    def _lease_outlasts_renewals(self) -> ClusterConfig:
        if self.lease < 2 * self.renew:
            raise ValueError("[cluster] lease must be at least twice renew")
        return self


class SafetyConfig(_Section):
    """Automatic disconnection limits (see headend.control.safety): quiet windows, caps, approval."""

    timezone: str = "UTC"  # the quiet windows and holidays are in this zone's local time
    night_start: time = time(18, 0)
    night_end: time = time(8, 0)
    no_weekends: bool = True
    holidays: list[date] = Field(default_factory=list)
    max_per_hour: int = Field(50, ge=0)
    max_per_run: int = Field(20, ge=0)
    approval_above: int = Field(10, ge=0)
    manual_approval_above: int = Field(0, ge=0)  # an operator's disconnects per hour before each waits
    dry_run: bool = False
    run_every: Duration = 30.0  # fee-control pass (service headend.control.service:run)
    reconnect_mode: ReconnectMode = "close"  # accounts may override it
    reconnect_on_mismatch: bool = False  # a paying customer's relay found open is closed again
    alarm_before_cut: bool = False  # warn with the meter's alarm (0x1C 2A) first; accounts may override it
    pending_alarm: Duration = 900.0  # an open command older than this counts as pending too long

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class AnalyticsConfig(_Section):
    """Analytics over the stored readings (see headend.analytics): the zone whose midnights bound a
    day (the meters' daily freezes; the drivers' default meter time is UTC+8)."""

    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone itself."""
        return ZoneInfo(self.timezone)


class ExceptionsConfig(_Section):
    """The exception rules the active daemon runs after each read cycle (docs/exceptions.md): which,
    their thresholds, and how long a condition stays clear before its exception closes by itself."""

    enabled: bool = False
    rules: list[ExceptionRule] = Field(default_factory=lambda: list(EXCEPTION_RULES))
    auto_close_after: Delay = 3600.0  # a condition clear this long closes its exception
    window: Duration = 3600.0  # how far back the reading rules look (backwards, stopped, reverse, phases)
    flat_kwh: float = Field(0.0, ge=0)  # a register moving no more than this is flat
    min_current_a: float = Field(0.5, ge=0)  # a stopped meter: the mean current at least this
    reverse_min_kwh: float = Field(0.1, gt=0)  # reverse energy: export grew at least this, import flat
    register_tolerance_kwh: float = Field(0.0, ge=0)  # going backwards by more than this
    voltage_loss_v: float = Field(100.0, gt=0)  # a phase below this has lost its voltage
    imbalance_pct: float = Field(50.0, gt=0, le=100)
    imbalance_min_a: float = Field(1.0, ge=0)  # below this largest phase current, no imbalance
    spike_window: Duration = 3600.0
    spike_history: Duration = 7 * DAY
    spike_factor: float = Field(4.0, gt=1)
    spike_min_kwh: float = Field(1.0, ge=0)
    clock_offset: Duration = 300.0  # a clock check finding the clock further off than this
    clock_window: Duration = DAY
    tamper_kinds: list[str] = Field(
        default_factory=lambda: [
            "meter_cover_open",
            "terminal_cover_open",
            "magnetic_interference",
            "meter_clear",
        ]
    )
    tamper_window: Duration = DAY
    no_read_after: Duration = 3 * DAY
    area_days: int = Field(3, ge=1, le=60)  # an area's latest complete day at most this many days back
    negative_loss_kwh: float = Field(0.0, ge=0)  # customers above the supply by more than this
    loss_jump_points: float = Field(5.0, gt=0)  # percentage points away from the 30-day median
    loss_jump_min_days: int = Field(7, ge=1, le=30)

    @field_validator("spike_history")
    @classmethod
    def _history_longer(cls, value: float, info: Any) -> float:
        window = info.data.get("spike_window")
        if window is not None and value <= window:
            raise ValueError("must be longer than spike_window")
        return value


class BillingConfig(_Section):
    """Arrears notice period and minimum amount, postpaid bill due days, how often balances are billed."""

    notice_period: Delay = 3 * 86400.0
    min_arrears: Decimal = Field(
        Decimal("10"), ge=0, lt=Decimal("1e12")
    )  # never flag arrears for less than this owed
    due_days: int = Field(15, ge=0)
    run_every: Duration = 900.0  # scheduled prepaid billing (service headend.billing.service:run)
    validate_every: Duration = 60.0  # VEE of newly stored energy readings between billing passes
    identity_every: Duration = 86400.0  # meter number check (a different device: billing hold)


class RegistrationConfig(_Section):
    """A DTU's registration packet: ``length`` > 0 fixed, else ``delimiter``, else the first packet."""

    encoding: Literal["ascii", "hex"] = "ascii"
    length: int = Field(0, ge=0, le=64)
    delimiter: str = ""  # text, or hex:0D0A
    prefix: str = ""

    @field_validator("delimiter", "prefix")
    @classmethod
    def _pattern(cls, value: str) -> str:
        _check_pattern(value)
        return value


def _check_pattern(value: str) -> None:

    parse_pattern(value)


class ListenerTlsConfig(_Section):
    """TLS on a dial-in listener: our certificate and key, and the CA that signs the devices' client
    certificates (required; a device's certificate common name must be the identity it sends)."""

    cert: Path
    key: Path
    client_ca: Path


class ListenerConfig(_Section):
    """One listening address for devices that dial in (cellular DTUs, or Q/GDW 1376.1 concentrators:
    ``kind = "gdw1376"``, identified by their login frame; ``registration`` and ``heartbeat`` are
    for DTUs only)."""

    address: str  # host:port; the operator chooses the public address
    kind: Literal["dtu", "gdw1376"] = "dtu"
    registration: RegistrationConfig = RegistrationConfig()
    heartbeat: str = ""  # the heartbeat packet: text, or hex:FE...; empty: none configured
    identify_timeout: Duration = 30.0
    max_bytes_before_id: int = Field(256, ge=1, le=65536)
    silent_timeout: Duration = 300.0  # nothing received, not even a heartbeat: closed
    max_connections: int = Field(10_000, ge=1)
    max_per_address: int = Field(100, ge=1)  # connections still identifying, per source address
    allow: list[str] = Field(default_factory=list)  # source networks (CIDR); empty: any
    conflict: Literal["keep", "replace"] = "keep"  # a second connection with a connected identity
    replace_silent_after: Duration = 120.0  # an established connection silent this long is replaced
    tls: ListenerTlsConfig | None = None

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        from headend.transport.url import parse_networks

        for item in value:
            parse_networks(item)
        return value

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"must be host:port (port 0: any free port), got {value!r}")
        return value

    @field_validator("heartbeat")
    @classmethod
    def _pattern(cls, value: str) -> str:
        _check_pattern(value)
        return value


class ListenConfig(_Section):
    """The dial-in front end; off unless ``listeners`` has entries. ``unknown``: refuse or hold."""

    unknown: Literal["refuse", "hold"] = "refuse"
    listeners: list[ListenerConfig] = Field(default_factory=list)
    pending_flush: Duration = 10.0  # how often pending identities are written for `channels pending`

    @field_validator("listeners")
    @classmethod
    def _distinct_ports(cls, value: list[ListenerConfig]) -> list[ListenerConfig]:
        wildcard = ("0.0.0.0", "::", "[::]", "")
        for i, first in enumerate(value):
            for second in value[i + 1 :]:
                (host_a, _, port_a), (host_b, _, port_b) = (
                    first.address.rpartition(":"),
                    second.address.rpartition(":"),
                )
                if (
                    int(port_a)
                    and port_a == port_b
                    and (host_a == host_b or {host_a, host_b} & set(wildcard))
                ):
                    raise ValueError(f"{first.address} and {second.address} both listen on port {port_a}")
        return value


class WebConfig(_Section):
    """``headend web``: the desk login's DSN (writes, each bound to the signed-in operator) and the
    reporting login's (reads); sessions end after ``session_idle`` without a request or
    ``session_max`` after sign-in; ``secure_cookies`` when served behind TLS; times shown in
    ``timezone``."""

    desk_dsn: str = ""
    report_dsn: str = ""
    session_idle: Duration = 1800.0
    session_max: Duration = Field(43200.0, le=86400.0)
    secure_cookies: bool = False
    timezone: str = "Asia/Shanghai"
    pool_size: int = Field(10, ge=1, le=200)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class HeadendConfig(_Section):
    database: DatabaseConfig = DatabaseConfig()
    polling: PollingConfig = PollingConfig()
    read_plans: dict[str, ReadPlan] = Field(
        default_factory=lambda: {"default": ReadPlan(quantities=["energy_import_kwh"])}
    )
    timeouts: TimeoutConfig = TimeoutConfig()
    health: HealthConfig = HealthConfig()
    backfill: BackfillConfig = BackfillConfig()
    clock: ClockConfig = ClockConfig()
    relay: RelayConfig = RelayConfig()
    events: EventsConfig = EventsConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    secrets: SecretsConfig = SecretsConfig()
    engine: EngineConfig = EngineConfig()
    ha: HaConfig = HaConfig()
    cluster: ClusterConfig = ClusterConfig()
    requests: RequestsConfig = RequestsConfig()
    campaigns: CampaignsConfig = CampaignsConfig()
    safety: SafetyConfig = SafetyConfig()
    billing: BillingConfig = BillingConfig()
    listen: ListenConfig = ListenConfig()
    analytics: AnalyticsConfig = AnalyticsConfig()
    exceptions: ExceptionsConfig = ExceptionsConfig()
    web: WebConfig = WebConfig()

    @field_validator("read_plans")
    @classmethod
    def _has_default(cls, value: dict[str, ReadPlan]) -> dict[str, ReadPlan]:
        if "default" not in value:
            raise ValueError("needs a [read_plans.default] entry for meters whose model has no plan")
        for model, plan in value.items():
            known = model_quantities(model) | model_quantities(None)
            unknown = [q for q in [*plan.quantities, *plan.instantaneous] if q not in known]
            if unknown:
                raise ValueError(f"{model}: unknown quantity {unknown[0]!r} (no meter model reads it)")
        return value

    def plan_for(self, model: str) -> ReadPlan:
        """The read plan of a meter model (falls back to ``default``)."""
        return self.read_plans.get(model) or self.read_plans["default"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; ``str()`` is ``file: key: reason`` lines."""


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validate_config(data: dict[str, Any], source: str) -> HeadendConfig:
    """Validate parsed TOML; ``source`` names the file in error messages."""
    try:
        return HeadendConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                reason = "unknown key"
            lines.append(f"{source}: {_location(error['loc'])}: {reason}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path | None) -> HeadendConfig:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return HeadendConfig()
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return validate_config(data, str(file))
