"""Channels and meters in the database: import from TOML or CSV files, list them.

TOML: ``[[channels]]`` tables (``name``, ``url``, optional ``enabled``, ``settings``) and
``[[meters]]`` tables (``channel``, ``protocol``, ``address``, ``model`` and optional ``unit_id``,
``name``, ``account``, ``protected``, ``protected_reason``, ``has_relay``, ``multiplier``,
``enabled``, ``installed_at``). CSV: one meter per row with the meter columns plus ``channel_url``
(channels are created from the distinct ``channel``/``channel_url`` pairs). Import is an upsert
keyed by channel name and by (channel, protocol, address, unit id); it bumps ``updated_at`` so a
running daemon picks the change up.
"""

from __future__ import annotations

import csv
import json
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CHANNEL_SCHEMES = {
    "serial": "serial",
    "tcp": "tcp",
    "modbus-tcp": "tcp",
    "rtu-over-tcp": "tcp",
    "dtu": "dtu",  # address: the registration id the device dials in with
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


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
        if not _NAME_RE.match(value):
            raise ValueError("letters, digits and _ . : - only")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in CHANNEL_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(CHANNEL_SCHEMES)}, got {parts.scheme!r}")
        if not (parts.netloc or parts.path):
            raise ValueError("has no host or device")
        if CHANNEL_SCHEMES[parts.scheme] == "tcp" and parts.port is None and parts.scheme != "modbus-tcp":
            raise ValueError("a TCP channel needs host:port")
        return value

    @property
    def kind(self) -> str:
        return CHANNEL_SCHEMES[urlsplit(self.url).scheme]

    @property
    def address(self) -> str:
        parts = urlsplit(self.url)
        if self.kind == "dtu":
            return parts.netloc + parts.path
        return parts.netloc if self.kind == "tcp" else parts.path


class MeterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str
    protocol: Literal["dlt645-2007", "dlt645-1997", "modbus"]
    address: str = ""
    unit_id: int | None = Field(None, ge=0, le=255)
    model: str = Field(min_length=1)
    name: str | None = None
    account: str | None = None
    protected: bool = False
    protected_reason: str | None = None
    has_relay: bool = False
    multiplier: float = Field(1.0, gt=0)
    enabled: bool = True
    installed_at: datetime | None = None

    @field_validator("installed_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _address_fits_protocol(self) -> MeterEntry:
        if self.protocol == "modbus":
            if self.unit_id is None:
                if not self.address.isdigit():
                    raise ValueError("a Modbus meter needs unit_id (0..255)")
                self.unit_id = int(self.address)
                if self.unit_id > 255:
                    raise ValueError("unit_id must be 0..255")
            self.address = str(self.unit_id)
        else:
            if not re.fullmatch(r"\d{1,12}", self.address):
                raise ValueError(f"DL/T 645 address must be up to 12 decimal digits, got {self.address!r}")
            self.address = self.address.zfill(12)
            if self.unit_id is not None:
                raise ValueError("unit_id is for Modbus meters only")
        if self.protected_reason and not self.protected:
            raise ValueError("protected_reason given but protected is false")
        return self


@dataclass(frozen=True, slots=True)
class Inventory:
    channels: list[ChannelEntry]
    meters: list[MeterEntry]


@dataclass(frozen=True, slots=True)
class ImportResult:
    channels: int
    meters: int


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
    source: str, channel_rows: list[tuple[str, dict]], meter_rows: list[tuple[str, dict]]
) -> Inventory:
    problems: list[str] = []
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
        channels[entry.name] = entry
    meters: list[MeterEntry] = []
    seen: dict[tuple[str, str, str], str] = {}
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
        meters.append(meter)
    if problems:
        raise InventoryError("\n".join(problems))
    return Inventory(list(channels.values()), meters)


def _read_toml(path: Path) -> Inventory:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"channels", "meters"}
    if unknown:
        raise InventoryError(f"{path}: {sorted(unknown)[0]}: unknown table (expected channels, meters)")
    channel_rows = [(f"channels[{i}]", row) for i, row in enumerate(data.get("channels", []))]
    meter_rows = [(f"meters[{i}]", row) for i, row in enumerate(data.get("meters", []))]
    return _parse_rows(str(path), channel_rows, meter_rows)


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
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "channel" not in reader.fieldnames:
            raise InventoryError(
                f"{path}: line 1: header must name at least channel, channel_url, protocol, address, model"
            )
        channel_rows: list[tuple[str, dict]] = []
        meter_rows: list[tuple[str, dict]] = []
        for row in reader:
            where = f"line {reader.line_num}"
            row = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            url = row.pop("channel_url", None)
            if url is not None:
                channel_rows.append((where, {"name": row.get("channel", ""), "url": url}))
            meter_rows.append((where, {k: _csv_value(k, v) for k, v in row.items()}))
    return _parse_rows(str(path), channel_rows, meter_rows)


def read_inventory(path: str | Path) -> Inventory:
    """Parse and validate an inventory file (``.toml`` or ``.csv``)."""
    file = Path(path)
    if not file.is_file():
        raise InventoryError(f"{file}: no such file")
    if file.suffix.lower() == ".csv":
        return _read_csv(file)
    if file.suffix.lower() == ".toml":
        return _read_toml(file)
    raise InventoryError(f"{file}: unknown format (use .toml or .csv)")


_UPSERT_CHANNEL = """
INSERT INTO channels (name, kind, address, settings, enabled) VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, address = EXCLUDED.address,
    settings = EXCLUDED.settings, enabled = EXCLUDED.enabled, updated_at = now()
RETURNING id
"""

_UPSERT_METER = """
INSERT INTO meters (name, protocol, address, unit_id, model, channel_id, account_id, protected,
                    protected_reason, has_relay, multiplier, enabled, installed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()))
ON CONFLICT (channel_id, protocol, address, coalesce(unit_id, -1)) DO UPDATE SET
    name = EXCLUDED.name, model = EXCLUDED.model, account_id = EXCLUDED.account_id,
    protected = EXCLUDED.protected, protected_reason = EXCLUDED.protected_reason,
    has_relay = EXCLUDED.has_relay, multiplier = EXCLUDED.multiplier, enabled = EXCLUDED.enabled,
    installed_at = coalesce($13, meters.installed_at), removed_at = NULL, updated_at = now()
"""


async def import_inventory(
    conn: asyncpg.Connection, inventory: Inventory, source: str = "inventory"
) -> ImportResult:
    """Upsert the channels and meters in one transaction; unknown channels or accounts are errors."""
    async with conn.transaction():
        channel_ids: dict[str, int] = {
            r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM channels")
        }
        for i, ch in enumerate(inventory.channels):
            settings = {**ch.settings, "url": ch.url}
            try:
                channel_ids[ch.name] = await conn.fetchval(
                    _UPSERT_CHANNEL, ch.name, ch.kind, ch.address, json.dumps(settings), ch.enabled
                )
            except asyncpg.UniqueViolationError:  # channels_dtu_identity: one channel per device
                raise InventoryError(
                    f"{source}: channels[{i}]: url: dtu id {ch.address!r} belongs to another channel"
                ) from None
        accounts = {r["number"]: r["id"] for r in await conn.fetch("SELECT id, number FROM accounts")}
        problems = []
        for i, m in enumerate(inventory.meters):
            if m.channel not in channel_ids:
                problems.append(f"{source}: meters[{i}]: channel: no channel named {m.channel!r}")
            if m.account is not None and m.account not in accounts:
                problems.append(f"{source}: meters[{i}]: account: no account numbered {m.account!r}")
        if problems:
            raise InventoryError("\n".join(problems))
        await conn.executemany(
            _UPSERT_METER,
            [
                (
                    m.name,
                    m.protocol,
                    m.address,
                    m.unit_id,
                    m.model,
                    channel_ids[m.channel],
                    accounts.get(m.account) if m.account else None,
                    m.protected,
                    m.protected_reason,
                    m.has_relay,
                    m.multiplier,
                    m.enabled,
                    m.installed_at,
                )
                for m in inventory.meters
            ],
        )
    return ImportResult(len(inventory.channels), len(inventory.meters))


async def list_inventory(conn: asyncpg.Connection, channel: str | None = None) -> list[asyncpg.Record]:
    """Meters with their channel, in channel then address order (optionally one channel only)."""
    return await conn.fetch(
        """
        SELECT c.name AS channel, c.settings->>'url' AS url, c.enabled AS channel_enabled, m.id, m.name,
               m.protocol, m.address, m.unit_id, m.model, m.protected, m.has_relay, m.enabled
        FROM meters m JOIN channels c ON c.id = m.channel_id
        WHERE m.removed_at IS NULL AND ($1::text IS NULL OR c.name = $1)
        ORDER BY c.name, m.protocol, m.address
        """,
        channel,
    )


async def find_meter(conn: asyncpg.Connection, ref: str) -> tuple[int, str]:
    """``(id, label)`` of the one meter named or addressed ``ref``; InventoryError if none or several."""
    rows = await conn.fetch(
        "SELECT id, coalesce(name, address) AS label FROM meters WHERE name = $1 OR address = $1 ORDER BY id",
        ref,
    )
    if not rows:
        raise InventoryError(f"no meter named or addressed {ref!r}")
    if len(rows) > 1:
        names = ", ".join(r["label"] for r in rows)
        raise InventoryError(f"{ref!r} matches {len(rows)} meters ({names}); give the meter's name")
    return int(rows[0]["id"]), str(rows[0]["label"])
