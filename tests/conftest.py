"""Suite-wide fixtures. Area fixtures live in tests/support/ and are imported here."""

from tests.support.logins import daemon_conn, logins  # noqa: F401
from tests.support.postgres import pg_dsn, pg_server  # noqa: F401
