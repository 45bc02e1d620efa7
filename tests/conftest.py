"""Suite-wide fixtures and the order tests start in. Area fixtures live in tests/support/."""

import pytest

from tests.support.logins import daemon_conn, logins  # noqa: F401
from tests.support.postgres import pg_dsn, pg_server  # noqa: F401


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return float(marker.kwargs.get("seconds", 0)) if marker is not None else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (``@pytest.mark.long(seconds=N)``, N as measured alone): the workers take
    the next test each time one ends (``--dist loadgroup``), so the long ones start at once and the
    short ones fill in around them instead of one long test running alone at the end."""
    items.sort(key=_seconds, reverse=True)
