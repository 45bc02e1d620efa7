"""The JSON documents of the parameter-campaign pages (in /api/openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MeterCounts(_Out):
    """A campaign's meters by state."""

    pending: int
    written: int
    verified: int
    skipped: int
    failed: int


class CampaignListed(_Out):
    """A time-of-use campaign: its parameter set (name and version), state, switch time, write
    windows, who created and approved it, and its meters counted by state; ``settled`` of ``total``
    are verified, skipped (already correct) or failed, ``share`` = settled / total (1.0 without meters)."""

    id: int
    name: str
    set_name: str
    set_version: int
    state: Literal["draft", "approved", "running", "paused", "done", "cancelled"]
    switch_at: datetime
    windows: list[str]
    max_attempts: int
    created_by: str
    created_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    total: int
    counts: MeterCounts
    settled: int
    share: float = Field(ge=0, le=1)


class CampaignsOut(_Out):
    """Every campaign, newest first (at most 200)."""

    campaigns: list[CampaignListed]


class CampaignMeter(_Out):
    """A meter of a campaign: its state, the attempts made, why it failed, when it was last tried
    (None before the first attempt), and the selector that named it (e.g. ``area A1``)."""

    name: str | None
    address: str
    channel: str
    selected_by: str | None
    state: Literal["pending", "written", "verified", "skipped", "failed"]
    attempts: int
    reason: str | None
    last_attempt_at: datetime | None


class CampaignOut(_Out):
    """One campaign's progress and a page of its meters: failed first, then written, pending, skipped,
    verified (by address within a state); ``pages`` pages of 100."""

    campaign: CampaignListed
    meters: list[CampaignMeter]
    page: int
    pages: int
