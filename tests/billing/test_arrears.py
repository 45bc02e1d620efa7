"""The arrears rule for prepaid and postpaid accounts, with and without a notice period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from headend.billing.arrears import AccountPosition, arrears_state

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)


def prepaid(balance: str, notice: datetime | None = None) -> AccountPosition:
    return AccountPosition("prepaid", Decimal(balance), Decimal("10"), 0, None, notice)


def test_prepaid_below_credit_limit() -> None:
    assert arrears_state(prepaid("-10.00"), NOW, timedelta(0)) == "clear"
    assert arrears_state(prepaid("-10.01"), NOW, timedelta(0)) == "arrears"


def test_notice_period_comes_first() -> None:
    period = timedelta(days=3)
    assert arrears_state(prepaid("-20"), NOW, period) == "notice"
    assert arrears_state(prepaid("-20", NOW - timedelta(days=1)), NOW, period) == "waiting"
    assert arrears_state(prepaid("-20", NOW - timedelta(days=3)), NOW, period) == "arrears"


def test_postpaid_overdue_past_grace() -> None:
    due = NOW - timedelta(days=5)
    position = AccountPosition("postpaid", Decimal("-50"), Decimal("0"), 7, due, None)
    assert arrears_state(position, NOW, timedelta(0)) == "clear"
    assert arrears_state(position, NOW + timedelta(days=2, seconds=1), timedelta(0)) == "arrears"
    paid = AccountPosition("postpaid", Decimal("0"), Decimal("0"), 7, None, None)
    assert arrears_state(paid, NOW + timedelta(days=30), timedelta(0)) == "clear"
