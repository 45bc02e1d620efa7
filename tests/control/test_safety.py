"""Safety policy rules with a controlled clock (the wall clock is outside the system)."""

from datetime import date, datetime

import pytest

from headend.control.safety import Candidate, CapExceeded, SafetySettings, evaluate_run, window_rule

WEDNESDAY_NOON = datetime(2026, 11, 18, 12, 0)


def test_windows_night_weekend_holiday_and_day_before() -> None:
    settings = SafetySettings(holidays=frozenset({date(2026, 11, 20)}))
    assert window_rule(settings, datetime(2026, 11, 17, 12, 0)) is None
    assert window_rule(settings, datetime(2026, 11, 17, 23, 0)) == "window.night"
    assert window_rule(settings, datetime(2026, 11, 17, 7, 59)) == "window.night"
    assert window_rule(settings, datetime(2026, 11, 21, 12, 0)) == "window.weekend"
    assert window_rule(settings, datetime(2026, 11, 20, 12, 0)) == "window.holiday"
    assert window_rule(settings, datetime(2026, 11, 19, 12, 0)) == "window.day_before_holiday"


def test_protected_refused_and_reconnect_never_blocked_by_window() -> None:
    night = datetime(2026, 11, 18, 22, 0)
    decisions = evaluate_run(
        SafetySettings(),
        [Candidate(1, "disconnect", protected=True), Candidate(2, "disconnect"), Candidate(3, "reconnect")],
        night,
        sent_last_hour=0,
    )
    assert [(d.allowed, d.rule) for d in decisions] == [
        (False, "protected"),
        (False, "window.night"),
        (True, None),
    ]


def test_alarms_are_made_at_night_and_count_towards_no_cap_and_an_unwarned_cut_is_refused() -> None:
    night = datetime(2026, 11, 18, 22, 0)
    candidates = [
        Candidate(1, "alarm"),
        Candidate(2, "alarm", protected=True),
        Candidate(3, "alarm_release", protected=True),
        Candidate(4, "disconnect", unwarned="no confirmed pre-trip alarm on the meter yet"),
    ]
    decisions = evaluate_run(SafetySettings(max_per_run=0), candidates, night, sent_last_hour=0)
    assert [(d.allowed, d.rule) for d in decisions] == [
        (True, None),  # the quiet windows hold it at send time
        (False, "protected"),
        (True, None),
        (False, "window.night"),
    ]
    by_day = evaluate_run(SafetySettings(), candidates[3:], WEDNESDAY_NOON, sent_last_hour=0)
    assert [(d.allowed, d.rule, d.reason) for d in by_day] == [
        (False, "alarm", "no confirmed pre-trip alarm on the meter yet")
    ]


def test_caps_halt_the_run() -> None:
    settings = SafetySettings(max_per_run=2, max_per_hour=5)
    with pytest.raises(CapExceeded) as run_cap:
        evaluate_run(settings, [Candidate(i, "disconnect") for i in range(3)], WEDNESDAY_NOON, 0)
    assert run_cap.value.rule == "cap.per_run"
    with pytest.raises(CapExceeded) as hour_cap:
        evaluate_run(settings, [Candidate(i, "disconnect") for i in range(2)], WEDNESDAY_NOON, 4)
    assert hour_cap.value.rule == "cap.per_hour"


def test_bulk_run_needs_approval_and_dry_run_is_carried() -> None:
    settings = SafetySettings(approval_above=2, dry_run=True)
    decisions = evaluate_run(settings, [Candidate(i, "disconnect") for i in range(3)], WEDNESDAY_NOON, 0)
    assert all(d.allowed and d.needs_approval and d.dry_run for d in decisions)
    reconnect = evaluate_run(settings, [Candidate(9, "reconnect")], WEDNESDAY_NOON, 0)
    assert reconnect[0].allowed and not reconnect[0].dry_run  # a paying customer is never left off
    small = evaluate_run(settings, [Candidate(1, "disconnect")], WEDNESDAY_NOON, 0)
    assert not small[0].needs_approval


def test_settings_come_from_the_example_config() -> None:
    from pathlib import Path

    from headend.config import load_config
    from headend.control.safety import settings_from_config

    config = load_config(Path(__file__).parents[2] / "config" / "headend.example.toml")
    settings = settings_from_config(config.safety)
    assert settings.max_per_run == 20 and settings.night_start.hour == 18 and not settings.dry_run
    assert config.billing.due_days == 15


def test_windows_are_judged_in_the_configured_time_zone() -> None:
    from zoneinfo import ZoneInfo

    from headend.config import ConfigError, validate_config

    config = validate_config({"safety": {"timezone": "Asia/Shanghai"}}, "t.toml")
    utc_noon = datetime(2026, 11, 18, 12, 0, tzinfo=ZoneInfo("UTC"))  # 20:00 in Shanghai
    local = utc_noon.astimezone(ZoneInfo(config.safety.timezone))
    assert window_rule(SafetySettings(), utc_noon) is None
    assert window_rule(SafetySettings(), local) == "window.night"
    with pytest.raises(ConfigError, match="unknown time zone"):
        validate_config({"safety": {"timezone": "Mars/Olympus"}}, "t.toml")
