"""Interval arithmetic and meter health (adaptive timeout, quarantine with exponential backoff)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from headend.config import HealthConfig, TimeoutConfig
from headend.engine.health import HealthBook
from headend.engine.timing import boundaries_between, floor_boundary, next_boundary


def test_boundaries_are_multiples_of_the_interval_in_utc() -> None:
    t = datetime(2026, 3, 1, 10, 7, 59, 900_000, tzinfo=UTC)
    assert floor_boundary(t, 900) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert next_boundary(t, 900) == datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    assert next_boundary(datetime(2026, 3, 1, 10, 15, tzinfo=UTC), 900) == datetime(
        2026, 3, 1, 10, 30, tzinfo=UTC
    )
    assert floor_boundary(datetime(2026, 3, 1, 10, 0, 3, tzinfo=UTC), 2) == datetime(
        2026, 3, 1, 10, 0, 2, tzinfo=UTC
    )
    start = datetime(2026, 3, 1, 9, 50, tzinfo=UTC)
    assert boundaries_between(start, start + timedelta(minutes=40), 900) == [
        datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 10, 15, tzinfo=UTC),
    ]


def _book(**health: float) -> HealthBook:
    return HealthBook(
        TimeoutConfig(initial=2.0, minimum=0.2, maximum=5.0),
        HealthConfig(**({"quarantine_after": 3, "backoff": 10.0, "backoff_max": 35.0} | health)),
    )


def test_timeout_adapts_to_measured_turnaround_within_bounds() -> None:
    book = _book()
    assert book.timeout(1) == 2.0
    for _ in range(30):
        book.succeeded(1, 0.1)
    assert 0.2 <= book.timeout(1) < 0.25
    for _ in range(30):
        book.succeeded(2, 0.01)
    assert book.timeout(2) == 0.2
    for _ in range(30):
        book.succeeded(3, 3.0)
    assert book.timeout(3) == pytest.approx(3.0, abs=0.2)
    book.succeeded(4, 9.0)
    assert book.timeout(4) == 5.0


def test_quarantine_after_consecutive_failures_with_doubling_backoff() -> None:
    book = _book()
    assert not book.failed(7, "timeout", now=100.0)
    assert not book.failed(7, "timeout", now=101.0)
    assert book.failed(7, "timeout", now=102.0)
    assert book.quarantined(7, now=111.9) and not book.quarantined(7, now=112.1)
    assert book.failed(7, "timeout", now=113.0)  # probe after the backoff fails: 20 s
    assert book.quarantined(7, now=132.9) and not book.quarantined(7, now=133.1)
    assert book.failed(7, "timeout", now=134.0)  # 40 s, capped at 35 s
    assert book.quarantined(7, now=168.9) and not book.quarantined(7, now=169.1)
    book.succeeded(7, 0.1)
    assert not book.quarantined(7, now=134.0)
    assert not book.failed(7, "timeout", now=200.0)  # the streak starts again from zero
