"""The one safety policy for automatic disconnection: every refusal names the rule that refused it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from headend.config import SafetyConfig
from headend.vocabulary import ReconnectMode


@dataclass(frozen=True)
class SafetySettings:
    """Configured limits: quiet windows, holiday calendar, caps and the bulk-approval threshold."""

    night_start: time = time(18, 0)
    night_end: time = time(8, 0)
    no_weekends: bool = True
    holidays: frozenset[date] = field(default_factory=frozenset)
    max_per_hour: int = 50
    max_per_run: int = 20
    approval_above: int = 10
    dry_run: bool = False
    reconnect_mode: ReconnectMode = "close"  # or "close_allowed": the customer presses the button
    reconnect_on_mismatch: bool = False  # a paying customer's relay found open is closed again
    min_arrears: Decimal = Decimal(0)  # [billing] min_arrears: an automatic disconnect goes out only above it


def settings_from_config(config: SafetyConfig, min_arrears: Decimal = Decimal(0)) -> SafetySettings:
    """SafetySettings from the ``[safety]`` section of headend.toml (and ``[billing] min_arrears``)."""
    return SafetySettings(
        night_start=config.night_start,
        night_end=config.night_end,
        no_weekends=config.no_weekends,
        holidays=frozenset(config.holidays),
        max_per_hour=config.max_per_hour,
        max_per_run=config.max_per_run,
        approval_above=config.approval_above,
        dry_run=config.dry_run,
        reconnect_mode=config.reconnect_mode,
        reconnect_on_mismatch=config.reconnect_on_mismatch,
        min_arrears=min_arrears,
    )


@dataclass(frozen=True)
class Candidate:
    """A meter automation wants to switch."""

    meter_id: int
    action: str  # 'disconnect' | 'reconnect'
    protected: bool = False
    hold: str | None = None  # why the meter's data is held (unresolved suspect readings)


@dataclass(frozen=True)
class Decision:
    """Outcome for one candidate: allowed, or refused by ``rule`` with a human-readable ``reason``."""

    allowed: bool
    rule: str | None = None
    reason: str = ""
    needs_approval: bool = False
    dry_run: bool = False


class CapExceeded(RuntimeError):
    """The per-hour or per-run cap was reached: automation halts and an alarm is raised."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _in_night(settings: SafetySettings, moment: time) -> bool:
    if settings.night_start <= settings.night_end:
        return settings.night_start <= moment < settings.night_end
    return moment >= settings.night_start or moment < settings.night_end


def window_rule(settings: SafetySettings, now: datetime) -> str | None:
    """The quiet-window rule that forbids automatic disconnection at ``now`` (local time), if any."""
    if _in_night(settings, now.time()):
        return "window.night"
    if settings.no_weekends and now.weekday() >= 5:
        return "window.weekend"
    if now.date() in settings.holidays:
        return "window.holiday"
    if now.date() + timedelta(days=1) in settings.holidays:
        return "window.day_before_holiday"
    return None


def evaluate_run(
    settings: SafetySettings, candidates: list[Candidate], now: datetime, sent_last_hour: int
) -> list[Decision]:
    """Decide every candidate of one automatic run; raises CapExceeded when a cap would be passed.

    Reconnects are never blocked by windows, protection or holds, count towards nothing and are never
    dry runs (a customer who pays during a dry run is reconnected).
    """
    window = window_rule(settings, now)
    decisions: list[Decision] = []
    disconnects = 0
    for candidate in candidates:
        if candidate.action == "reconnect":  # restoring supply is never a rehearsal: dry run cuts nobody
            decisions.append(Decision(True))
            continue
        if candidate.protected:
            decisions.append(Decision(False, "protected", f"meter {candidate.meter_id} is protected"))
            continue
        if candidate.hold is not None:
            decisions.append(Decision(False, "hold.suspect_data", f"billing data held: {candidate.hold}"))
            continue
        if window is not None:
            decisions.append(Decision(False, window, f"automatic disconnection not allowed ({window})"))
            continue
        disconnects += 1
        if disconnects > settings.max_per_run:
            raise CapExceeded("cap.per_run", f"more than {settings.max_per_run} disconnects in one run")
        if sent_last_hour + disconnects > settings.max_per_hour:
            raise CapExceeded("cap.per_hour", f"more than {settings.max_per_hour} disconnects in one hour")
        decisions.append(Decision(True, dry_run=settings.dry_run))
    if disconnects > settings.approval_above:
        decisions = [
            Decision(d.allowed, d.rule, d.reason, needs_approval=d.allowed, dry_run=d.dry_run)
            for d in decisions
        ]
    return decisions
