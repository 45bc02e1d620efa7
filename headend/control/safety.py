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
    alarm_before_cut: bool = False  # the meter's pre-trip alarm first (accounts may override it)
    notice: timedelta = timedelta(0)  # [billing] notice_period: a confirmed alarm sounds this long first


def settings_from_config(
    config: SafetyConfig, min_arrears: Decimal = Decimal(0), notice: timedelta = timedelta(0)
) -> SafetySettings:
    """SafetySettings from the ``[safety]`` section of headend.toml (and ``[billing] min_arrears`` and
    ``notice_period``)."""
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
        alarm_before_cut=config.alarm_before_cut,
        notice=notice,
    )


@dataclass(frozen=True)
class Candidate:
    """A meter automation wants to switch."""

    meter_id: int
    action: str  # 'disconnect' | 'reconnect' | 'alarm' | 'alarm_release'
    protected: bool = False
    hold: str | None = None  # why the meter's data is held (unresolved suspect readings)
    unwarned: str | None = None  # a disconnect: why the pre-trip alarm does not allow it yet


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

    Reconnects and alarm releases are never blocked by windows, protection or holds, count towards
    nothing and are never dry runs (a customer who pays during a dry run is reconnected). An alarm is
    refused like a disconnect for a protected or held meter, otherwise made (the quiet windows and the
    halt hold it at send time) and counts towards no disconnect cap; a disconnect whose pre-trip alarm
    is not confirmed a notice period ago is refused by rule ``alarm``.
    """
    window = window_rule(settings, now)
    decisions: list[Decision] = []
    disconnects = 0
    for candidate in candidates:
        if candidate.action in ("reconnect", "alarm_release"):  # restoring is never a rehearsal
            decisions.append(Decision(True))
            continue
        if candidate.protected:
            decisions.append(Decision(False, "protected", f"meter {candidate.meter_id} is protected"))
            continue
        if candidate.hold is not None:
            decisions.append(Decision(False, "hold.suspect_data", f"billing data held: {candidate.hold}"))
            continue
        if candidate.action == "alarm":  # the quiet windows hold it when it is about to go out
            decisions.append(Decision(True))
            continue
        if window is not None:
            decisions.append(Decision(False, window, f"automatic disconnection not allowed ({window})"))
            continue
        if candidate.unwarned is not None:
            decisions.append(Decision(False, "alarm", candidate.unwarned))
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
