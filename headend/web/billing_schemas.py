"""The JSON documents of the VEE holds and tariffs pages (in /api/openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class HoldNote(_Out):
    """An admin's note on a hold kept open."""

    operator: str
    note: str
    noted_at: datetime


class OpenHold(_Out):
    """A register held for suspect data: billing and automatic disconnection wait for its resolution."""

    id: int
    meter: str
    quantity: str
    rule: Literal["decrease", "jump", "identity"]
    reason: str
    first_ts: datetime
    previous_value: float | None
    value: float | None
    opened_at: datetime
    account: str | None
    notes: list[HoldNote]


class ResolvedHold(_Out):
    """A hold resolved: how, by whom, why."""

    id: int
    meter: str
    quantity: str
    rule: str
    reason: str
    opened_at: datetime
    resolved_at: datetime
    resolution: Literal["accepted", "replaced", "corrected"]
    resolved_by: str | None
    resolution_reason: str | None


class HoldsOut(_Out):
    """The open VEE holds (oldest first) and the holds resolved last (newest first)."""

    open: list[OpenHold]
    resolved: list[ResolvedHold]


class Release(BaseModel):
    """Resolve a hold as ``headend billing resolve`` does (admin role)."""

    resolution: Literal["accepted", "replaced", "corrected"] = Field(
        description="accepted: the readings are real; replaced: the meter was swapped in place; "
        "corrected: the first suspect reading gets ``value`` (estimated)."
    )
    reason: str = Field(min_length=1, max_length=500, description="Why (kept in the audit log).")
    final: float | None = Field(None, description="replaced: the old register's final value (kWh).")
    initial: float | None = Field(None, description="replaced: the new register's initial value (kWh).")
    value: float | None = Field(None, description="corrected: the right value of the first suspect reading.")


class Keep(BaseModel):
    """Keep a hold open with a note (admin role)."""

    note: str = Field(min_length=1, max_length=500)


class HoldDone(BaseModel):
    """The hold after the write: ``open`` is False once released."""

    id: int
    open: bool


class TariffListed(_Out):
    """A tariff, how many accounts it prices and how many versions (price dates, revisions) it has."""

    name: str
    kind: Literal["flat", "tou", "tiered"]
    currency: str
    created_at: datetime
    accounts: int
    versions: int


class TariffsOut(_Out):
    """Every tariff, by name."""

    tariffs: list[TariffListed]


class Rate(_Out):
    """The price of one register (total, t1..t4) per kWh."""

    register_: str = Field(alias="register")
    price: str


class RateVersion(_Out):
    """The register prices taking effect at ``from``."""

    from_: datetime = Field(alias="from")
    rates: list[Rate]


class Block(_Out):
    """A tiered block: kWh of the month up to ``upto`` (None: the rest) at ``price``."""

    upto: str | None
    price: str


class Definition(_Out):
    """A definition of the tariff: the first one (``from`` None) or a revision in force from ``from``:
    its time-of-use periods (MM-DD..MM-DD HH:MM-HH:MM=PRICE) or tiered blocks, in ``timezone``."""

    from_: datetime | None = Field(alias="from")
    timezone: str | None
    periods: list[str]
    blocks: list[Block]


class TariffFields(_Out):
    """A tariff's name, kind, currency, and how many accounts it prices."""

    name: str
    kind: str
    currency: str
    created_at: datetime
    accounts: int


class TariffOut(_Out):
    """One tariff: its price versions (newest first) and its definitions (oldest first)."""

    tariff: TariffFields
    rates: list[RateVersion]
    definitions: list[Definition]
