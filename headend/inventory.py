"""Channels and meters in the database: import from TOML or CSV files, list them.

TOML: ``[[channels]]`` tables (``name``, ``url``, optional ``enabled``, ``settings``) and
``[[meters]]`` tables (``channel``, ``protocol``, ``address``, ``model`` and optional ``unit_id``,
``name``, ``account``, ``protected``, ``protected_reason``, ``has_relay``, ``multiplier``,
``enabled``, ``installed_at``, ``meter_number`` (表号, the 12-digit DL/T 645-2007 meter number from
the nameplate: the recorded identity a dial-in connection is verified against; kept when a later
import omits it); behind a Q/GDW 1376.1 concentrator channel also ``port``, the
concentrator's port 1..31, and optionally ``pn``, the measurement point 1..2040 — a meter without
one keeps the Pn it was given before, or gets the lowest free one). A concentrator's total group is a
meter of protocol ``gdw1376-group``, model ``gdw1376-total-group``, address = its group number 1..8
(:mod:`headend.drivers.gdw1376_group`). CSV: one meter per row with
the meter columns plus ``channel_url``
(channels are created from the distinct ``channel``/``channel_url`` pairs). TOML files may also hold
``[[areas]]``, transformer areas (see :mod:`headend.areas`). Import is an upsert
keyed by channel name and by (channel, protocol, address, unit id); it bumps ``updated_at`` so a
running daemon picks the change up.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from headend import limits
from headend.areas import AreaEntry, AreaImportError, import_areas
from headend.store.concentrators import channel_kinds, duplicate_pns, stored_pns
from headend.store.inventory import (
    MeterRow,
    account_ids,
    channel_ids,
    installed_names,
    list_inventory,
    meters_named,
    named_assignments,
    open_first_assignment,
    upsert_channel,
    upsert_meters,
)
from headend.store.inventory_checks import stored_channels
from headend.transport.url import ChannelConfig, ChannelUrlError, check_protocol, parse_channel_url
from protocols.models import load_model_data, model_names

__all__ = [
    "Inventory",
    "InventoryError",
    "find_meter",
    "import_inventory",
    "list_inventory",
    "read_inventory",
]

CHANNEL_SCHEMES = {
    "serial": "serial",
    "tcp": "tcp",
    "modbus-tcp": "tcp",
    "rtu-over-tcp": "tcp",
    "dtu": "dtu",  # address: the registration id the device dials in with
    "gdw1376": "gdw1376",
    "gdw1376+tcp": "gdw1376",
}
MAX_PN = 2040
GROUP_PROTOCOL = "gdw1376-group"  # a concentrator's total group (headend.drivers.gdw1376_group)
MODEL_FAMILIES = ("modbus", GROUP_PROTOCOL)  # the model's protocol is the meter's; else "dlt645"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
BROADCAST_ADDRESSES = {"999999999999": "broadcast", "AAAAAAAAAAAA": "wildcard"}
MAX_INSTALL_AHEAD = timedelta(days=1)  # installed_at may be a little ahead (clock skew), never years
MAX_FILE_BYTES = 50 << 20


class InventoryError(ValueError):
    """An inventory file that cannot be imported; ``str()`` is ``file: where: field: reason`` lines."""


class ChannelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        limits.name(value)
        if not _NAME_RE.match(value):
            raise ValueError("letters, digits and _ . : - only")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_channel_url(value)  # the daemon's parser: what it would refuse is refused here
        return value

    @property
    def config(self) -> ChannelConfig:
        """The parsed URL."""
        return parse_channel_url(self.url)

    @property
    def kind(self) -> str:
        return CHANNEL_SCHEMES[self.config.scheme]

    @property
    def address(self) -> str:
        config = self.config
        if self.kind == "gdw1376":
            return config.terminal  # the concentrator's identity (A1+A2)
        if self.kind == "dtu":
            return config.identity
        return f"{config.host}:{config.port}" if self.kind == "tcp" else config.path


class MeterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str
    protocol: Literal["dlt645-2007", "dlt645-1997", "modbus", "gdw1376-group"]
    address: str = ""
    unit_id: int | None = None
    model: str = Field(min_length=1)
    name: str | None = None
    account: str | None = None
    protected: StrictBool = False  # TOML true/false ("yes" in a TOML file is refused, not guessed)
    protected_reason: str | None = None
    has_relay: StrictBool = False
    multiplier: float = 1.0
    enabled: StrictBool = True
    installed_at: datetime | None = None
    port: int | None = Field(None, ge=1, le=31)
    pn: int | None = Field(None, ge=1, le=MAX_PN)
    meter_number: str | None = None

    @property
    def settings(self) -> dict[str, int]:
        """What is stored in ``meters.settings``: the concentrator point, if any."""
        return {} if self.port is None else {"pn": self.pn or 0, "port": self.port}

    @field_validator("channel", "name", "account", "protected_reason")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else limits.name(value, "text")

    @field_validator("unit_id")
    @classmethod
    def _unit(cls, value: int | None) -> int | None:
        return None if value is None else limits.unit_id(value)

    @field_validator("multiplier")
    @classmethod
    def _multiplier(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 < value <= limits.MAX_MULTIPLIER:
            raise ValueError(f"must be a finite number above 0 and at most {limits.MAX_MULTIPLIER:g}")
        return value

    @field_validator("installed_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
        if value > datetime.now(UTC) + MAX_INSTALL_AHEAD:
            raise ValueError(f"{value.isoformat()} is in the future")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in model_names():
            raise ValueError(f"unknown meter model {value[:60]!r}; known: {', '.join(model_names())}")
        return value

    @model_validator(mode="after")
    def _address_fits_protocol(self) -> MeterEntry:
        family = self.protocol if self.protocol in MODEL_FAMILIES else "dlt645"
        model_protocol = load_model_data(self.model).get("protocol")
        if model_protocol != family:
            raise ValueError(
                f"model {self.model!r} is a {model_protocol} model, not for {self.protocol} meters"
            )
        if self.protocol == GROUP_PROTOCOL:
            if not re.fullmatch(r"[1-8]", self.address):
                raise ValueError(f"a total group's address is its number 1..8, got {self.address[:40]!r}")
            if self.port is not None or self.pn is not None or self.unit_id is not None or self.has_relay:
                raise ValueError("a total group has no port, pn, unit_id or relay")
        elif self.protocol == "modbus":
            if self.unit_id is None:
                if not self.address.isdigit():
                    raise ValueError("a Modbus meter needs unit_id (1..247)")
                self.unit_id = limits.unit_id(int(self.address))
            self.address = str(self.unit_id)
        else:
            kind = BROADCAST_ADDRESSES.get(self.address.upper().zfill(12))
            if kind is not None:
                raise ValueError(f"{self.address!r} is the DL/T 645 {kind} address, not a meter's")
            if not re.fullmatch(r"\d{1,12}", self.address):
                raise ValueError(
                    f"DL/T 645 address must be up to 12 decimal digits, got {self.address[:40]!r}"
                )
            self.address = self.address.zfill(12)
            if self.unit_id is not None:
                raise ValueError("unit_id is for Modbus meters only")
        if (self.pn is not None or self.port is not None) and self.protocol == "modbus":
            raise ValueError("pn and port are for DL/T 645 meters behind a concentrator")
        if self.pn is not None and self.port is None:
            raise ValueError("pn given without port")
        if self.protected_reason and not self.protected:
            raise ValueError("protected_reason given but protected is false")
        if self.meter_number is not None:
            if self.protocol != "dlt645-2007":
                raise ValueError("meter_number is the DL/T 645-2007 meter number (04 00 04 02)")
            if not re.fullmatch(r"\d{12}", self.meter_number):
                raise ValueError(
                    f"meter_number must be the 12 digits of the nameplate, got {self.meter_number[:40]!r}"
                )
        return self


@dataclass(frozen=True, slots=True)
class Inventory:
    channels: list[ChannelEntry]
    meters: list[MeterEntry]
    areas: list[AreaEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportResult:
    channels: int
    meters: int
    areas: int = 0
    moves: int = 0


def _errors(source: str, where: str, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(row)"
        reason = (
            "unknown field"
            if error["type"] == "extra_forbidden"
            else error["msg"].removeprefix("Value error, ")
        )
        lines.append(f"{source}: {where}: {field}: {reason}")
    return lines


def _parse_rows(
    source: str,
    channel_rows: list[tuple[str, dict]],
    meter_rows: list[tuple[str, dict]],
    area_rows: list[tuple[str, dict]] | None = None,
) -> Inventory:
    problems: list[str] = []
    areas: list[AreaEntry] = []
    for where, row in area_rows or []:
        try:
            areas.append(AreaEntry.model_validate(row))
        except ValidationError as exc:
            problems += _errors(source, where, exc)
    area_names = [a.name for a in areas]
    problems += [
        f"{source}: areas: name: {n!r} given twice"
        for n in sorted(set(area_names))
        if area_names.count(n) > 1
    ]
    channels: dict[str, ChannelEntry] = {}
    for where, row in channel_rows:
        try:
            entry = ChannelEntry.model_validate(row)
        except ValidationError as exc:
            problems += _errors(source, where, exc)
            continue
        previous = channels.get(entry.name)
        if previous is not None and previous.url != entry.url:
            problems.append(
                f"{source}: {where}: url: channel {entry.name!r} already has url {previous.url!r}"
            )
        twin = next((c for c in channels.values() if c.name != entry.name and same_bus(c, entry)), None)
        if twin is not None:
            problems.append(f"{source}: {where}: url: {_same_bus_reason(entry.name, twin.name, twin.url)}")
        channels[entry.name] = entry
    meters: list[MeterEntry] = []
    seen: dict[tuple[str, str, str], str] = {}
    names: dict[str, str] = {}
    for where, row in meter_rows:
        try:
            meter = MeterEntry.model_validate(row)
        except ValidationError as exc:
            problems += _errors(source, where, exc)
            continue
        key = (meter.channel, meter.protocol, meter.address)
        if key in seen:
            problems.append(f"{source}: {where}: address: duplicate of {seen[key]}")
        seen[key] = where
        if meter.name is not None and meter.name in names:
            problems.append(
                f"{source}: {where}: name: {meter.name!r} is also the name of {names[meter.name]}"
            )
        if meter.name is not None:
            names.setdefault(meter.name, where)
        channel = channels.get(meter.channel)
        if channel is not None:
            try:
                check_protocol(meter.protocol, channel.config)
            except ChannelUrlError as exc:
                problems.append(f"{source}: {where}: protocol: {exc}")
        meters.append(meter)
    if problems:
        raise InventoryError("\n".join(problems))
    return Inventory(list(channels.values()), meters, areas)


def same_bus(one: ChannelEntry, other: ChannelEntry) -> bool:
    """Whether two channels reach the same physical bus (same device, or same host:port)."""
    return one.config.bus == other.config.bus


def _same_bus_reason(name: str, other: str, other_url: str) -> str:
    return (
        f"channel {name!r} is the same bus as channel {other!r} ({other_url}); one bus under two names"
        " would read and bill its meters twice"
    )


def _text_of(path: Path) -> str:
    """The file's text: UTF-8, no NUL bytes, not absurdly large (binary files are refused here)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InventoryError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MB")
    data = path.read_bytes()
    if b"\x00" in data:
        raise InventoryError(f"{path}: binary file (NUL bytes), expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _read_toml(path: Path) -> Inventory:
    try:
        data = tomllib.loads(_text_of(path))
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"channels", "meters", "areas"}
    if unknown:
        raise InventoryError(
            f"{path}: {sorted(unknown)[0]}: unknown table (expected channels, meters, areas)"
        )
    for table in ("channels", "meters", "areas"):
        if not isinstance(data.get(table, []), list):
            raise InventoryError(f"{path}: {table}: must be an array of tables ([[{table}]])")
    channel_rows = [(f"channels[{i}]", row) for i, row in enumerate(data.get("channels", []))]
    meter_rows = [(f"meters[{i}]", row) for i, row in enumerate(data.get("meters", []))]
    area_rows = [(f"areas[{i}]", row) for i, row in enumerate(data.get("areas", []))]
    return _parse_rows(str(path), channel_rows, meter_rows, area_rows)


_CSV_BOOLS = {"protected", "has_relay", "enabled"}


def _csv_value(column: str, text: str) -> Any:
    if column in _CSV_BOOLS:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0", ""):
            return False
        return text
    return text.strip()


def _read_csv(path: Path) -> Inventory:
    reader = csv.DictReader(io.StringIO(_text_of(path), newline=""))
    channel_rows: list[tuple[str, dict]] = []
    meter_rows: list[tuple[str, dict]] = []
    try:
        if not reader.fieldnames or "channel" not in reader.fieldnames:
            raise InventoryError(
                f"{path}: line 1: header must name at least channel, channel_url, protocol, address, model"
            )
        for row in reader:
            where = f"line {reader.line_num}"
            if None in row:
                raise InventoryError(f"{path}: {where}: more fields than the header names")
            row = {k: v for k, v in row.items() if v not in (None, "")}
            url = row.pop("channel_url", None)
            if url is not None:
                channel_rows.append((where, {"name": row.get("channel", ""), "url": url}))
            meter_rows.append((where, {k: _csv_value(k, v) for k, v in row.items()}))
    except csv.Error as exc:
        raise InventoryError(f"{path}: line {reader.line_num}: not valid CSV: {exc}") from None
    return _parse_rows(str(path), channel_rows, meter_rows)


def read_inventory(path: str | Path) -> Inventory:
    """Parse and validate an inventory file (``.toml`` or ``.csv``)."""
    file = Path(path)
    if not file.is_file():
        raise InventoryError(f"{file}: no such file")
    if file.suffix.lower() == ".csv":
        inventory = _read_csv(file)
    elif file.suffix.lower() == ".toml":
        inventory = _read_toml(file)
    else:
        raise InventoryError(f"{file}: unknown format (use .toml or .csv)")
    if not inventory.channels and not inventory.meters and not inventory.areas:
        raise InventoryError(f"{file}: no channels and no meters: an empty file would import nothing")
    return inventory


def _stored_bus_problems(source: str, inventory: Inventory, stored: dict[str, str]) -> list[str]:
    """Channels of this file that reach a bus already stored under another name."""
    buses: dict[str, list[str]] = {}
    for name, url in stored.items():
        try:
            buses.setdefault(parse_channel_url(url).bus, []).append(name)
        except ChannelUrlError:
            continue  # an old row the daemon cannot open either: not a second owner of any bus
    problems = []
    for i, channel in enumerate(inventory.channels):
        others = [name for name in buses.get(channel.config.bus, []) if name != channel.name]
        if others:
            reason = _same_bus_reason(channel.name, others[0], stored[others[0]])
            problems.append(f"{source}: channels[{i}]: url: {reason}")
    return problems


async def import_inventory(
    conn: asyncpg.Connection, inventory: Inventory, source: str = "inventory"
) -> ImportResult:
    """Upsert the channels and meters in one transaction; unknown channels or accounts are errors."""
    async with conn.transaction():
        channels = await channel_ids(conn)
        for i, ch in enumerate(inventory.channels):
            settings = {**ch.settings, "url": ch.url}
            try:
                channels[ch.name] = await upsert_channel(
                    conn, ch.name, ch.kind, ch.address, settings, ch.enabled
                )
            except asyncpg.UniqueViolationError:  # channels_dtu_identity: one channel per device
                raise InventoryError(
                    f"{source}: channels[{i}]: url: dtu id {ch.address!r} belongs to another channel"
                ) from None
        accounts = await account_ids(conn)
        problems = []
        stored = {c.name: c.url for c in await stored_channels(conn)}
        problems.extend(_stored_bus_problems(source, inventory, stored))
        for i, m in enumerate(inventory.meters):
            if m.channel not in channels:
                problems.append(f"{source}: meters[{i}]: channel: no channel named {m.channel!r}")
            elif m.channel in stored:
                try:
                    check_protocol(m.protocol, parse_channel_url(stored[m.channel]))
                except ChannelUrlError as exc:
                    problems.append(f"{source}: meters[{i}]: protocol: {exc}")
            if m.account is not None and m.account not in accounts:
                problems.append(f"{source}: meters[{i}]: account: no account numbered {m.account!r}")
        kinds = {ch.name: ch.kind for ch in inventory.channels}
        kinds.update(
            await channel_kinds(conn, [m.channel for m in inventory.meters if m.channel not in kinds])
        )
        problems += await _assign_points(conn, inventory.meters, kinds, source)
        problems += _name_problems(source, inventory.meters, await installed_names(conn))
        if problems:
            raise InventoryError("\n".join(problems))
        rows: list[MeterRow] = [
            (
                m.name,
                m.protocol,
                m.address,
                m.unit_id,
                m.model,
                channels[m.channel],
                m.protected,
                m.protected_reason,
                m.has_relay,
                m.multiplier,
                m.enabled,
                m.installed_at,
                m.settings,
                m.meter_number,
            )
            for m in inventory.meters
        ]
        try:
            await upsert_meters(conn, rows)
        except asyncpg.UniqueViolationError as exc:  # a generated channel/address name given to another
            if exc.constraint_name != "meters_name_installed":
                raise
            raise InventoryError(f"{source}: meters: name: {exc.detail}") from None
        await _assign_named_accounts(conn, inventory.meters, channels, accounts, source)
        duplicates = await duplicate_pns(conn)
        if duplicates:
            raise InventoryError(
                "\n".join(
                    f"{source}: channel {name!r}: pn {pn} given to more than one meter"
                    for name, pn in duplicates
                )
            )
        try:
            moves = await import_areas(conn, inventory.areas, source, find_meter)
        except AreaImportError as exc:
            raise InventoryError(str(exc)) from None
    return ImportResult(len(inventory.channels), len(inventory.meters), len(inventory.areas), moves)


def _name_problems(
    source: str, meters: list[MeterEntry], installed: dict[str, tuple[str, str, str]]
) -> list[str]:
    """Names of this file that an installed meter other than the named one already has."""
    problems = []
    for i, m in enumerate(meters):
        holder = installed.get(m.name or "")
        if holder is not None and holder != (m.channel, m.protocol, m.address):
            channel, protocol, address = holder
            problems.append(
                f"{source}: meters[{i}]: name: {m.name!r} is the name of the {protocol} meter {address}"
                f" on channel {channel!r}"
            )
    return problems


async def _assign_named_accounts(
    conn: asyncpg.Connection,
    meters: list[MeterEntry],
    channels: dict[str, int],
    accounts: dict[str, int],
    source: str,
) -> None:
    """The ``account`` keys of the file against the assignment rows (the only truth): a meter without
    assignments gets its first one; one already assigned to that account is left alone; any other
    account is refused (moving a meter is `headend accounts assign`). A meter the file names without
    an account keeps its assignment."""
    named = [(i, m) for i, m in enumerate(meters) if m.account is not None]
    if not named:
        return
    keys = [(channels[m.channel], m.protocol, m.address, m.unit_id) for _, m in named]
    problems = []
    for row in await named_assignments(conn, keys):
        i, m = named[row["ord"] - 1]
        if row["open_account"] == m.account:
            continue
        if row["open_account"] is not None:
            problems.append(
                f"{source}: meters[{i}]: account: meter {row['label']} is assigned to account"
                f" {row['open_account']}, not {m.account} (move it with `headend accounts assign`)"
            )
        elif row["last_account"] is not None:
            problems.append(
                f"{source}: meters[{i}]: account: meter {row['label']} left account {row['last_account']};"
                f" assign it to {m.account} with `headend accounts assign`"
            )
        else:
            await open_first_assignment(conn, row["meter_id"], accounts[str(m.account)])
    if problems:
        raise InventoryError("\n".join(problems))


async def _assign_points(
    conn: asyncpg.Connection, meters: list[MeterEntry], kinds: dict[str, str], source: str
) -> list[str]:
    """Check port/pn against the channel kind and give concentrator meters without a Pn their stored
    one or the lowest free one; returns the problems found."""
    problems = []
    stored = await stored_pns(conn)
    taken: dict[str, set[int]] = {}
    for (channel, _address), pn in stored.items():
        taken.setdefault(channel, set()).add(pn)
    for i, m in enumerate(meters):
        concentrator = kinds.get(m.channel) == "gdw1376"
        if m.protocol == GROUP_PROTOCOL:
            continue  # a total group: its number is its address (its channel checked with the protocol)
        if concentrator and m.port is None:
            problems.append(f"{source}: meters[{i}]: port: a meter behind a concentrator needs port (1..31)")
        elif not concentrator and m.port is not None:
            problems.append(f"{source}: meters[{i}]: port: pn and port are only for concentrator channels")
        elif concentrator and m.pn is not None:
            taken.setdefault(m.channel, set()).add(m.pn)
    for m in meters:
        if m.port is not None and m.pn is None and kinds.get(m.channel) == "gdw1376":
            used = taken.setdefault(m.channel, set())
            m.pn = stored.get((m.channel, m.address)) or next(
                p for p in range(1, MAX_PN + 2) if p not in used
            )
            used.add(m.pn)
            if m.pn > MAX_PN:
                problems.append(f"{source}: channel {m.channel!r}: no free pn for meter {m.address}")
    return problems


async def find_meter(conn: asyncpg.Connection, ref: str) -> tuple[int, str]:
    """``(id, name)`` of the meter named ``ref`` (the installed one before a removed one), else of the
    one meter addressed ``ref`` or ``channel/ref``; InventoryError if none or several."""
    rows = await meters_named(conn, ref)
    if not rows:
        raise InventoryError(f"no meter named or addressed {ref!r}")
    named = [r for r in rows if r["exact"]]
    if len(named) == 1 or (named and named[0]["installed"]):  # names are unique among installed meters
        return int(named[0]["id"]), str(named[0]["label"])
    if len(rows) > 1:
        names = ", ".join(r["label"] for r in rows)
        raise InventoryError(f"{ref!r} matches {len(rows)} meters ({names}); give the meter's name")
    return int(rows[0]["id"]), str(rows[0]["label"])
