"""Billing math: register differences (rollover, replacement) and time-of-use pricing."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from headend.billing.consumption import ConsumptionError, RegisterReading, register_delta
from headend.billing.tariff import Price, TariffError, charge

ROLL = Decimal("1000000.00")


def test_plain_difference_and_rollover() -> None:
    assert register_delta(
        RegisterReading("A", Decimal("10.5")), RegisterReading("A", Decimal("12.25")), rollover_at=ROLL
    ) == Decimal("1.75")
    assert register_delta(
        RegisterReading("A", Decimal("999999.00")), RegisterReading("A", Decimal("3.00")), rollover_at=ROLL
    ) == Decimal("4.00")


def test_decrease_outside_range_is_an_error() -> None:
    with pytest.raises(ConsumptionError):
        register_delta(
            RegisterReading("A", Decimal("5")), RegisterReading("A", Decimal("-1")), rollover_at=ROLL
        )


def test_meter_replacement_adds_both_parts() -> None:
    delta = register_delta(
        RegisterReading("OLD", Decimal("500")),
        RegisterReading("NEW", Decimal("7")),
        rollover_at=ROLL,
        removed_final=Decimal("520"),
        installed_initial=Decimal("2"),
    )
    assert delta == Decimal("25")
    with pytest.raises(ConsumptionError):
        register_delta(
            RegisterReading("OLD", Decimal("500")), RegisterReading("NEW", Decimal("7")), rollover_at=ROLL
        )


def test_tou_prices_follow_effective_dates() -> None:
    jan = datetime(2026, 1, 1, tzinfo=UTC)
    jul = datetime(2026, 7, 1, tzinfo=UTC)
    prices = [
        Price("t1", Decimal("1.0"), jan),
        Price("t2", Decimal("0.5"), jan),
        Price("t1", Decimal("1.2"), jul),
    ]
    usage = {"t1": Decimal("10"), "t2": Decimal("4.333")}
    assert charge(prices, usage, datetime(2026, 3, 1, tzinfo=UTC)) == Decimal("12.17")
    assert charge(prices, usage, datetime(2026, 8, 1, tzinfo=UTC)) == Decimal("14.17")
    with pytest.raises(TariffError):
        charge(prices, {"t3": Decimal("1")}, jul)
