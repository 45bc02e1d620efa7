"""Real-PostgreSQL fixtures shared by every area.

``pg_server`` (session, so one per xdist worker): a throwaway cluster run by
``headend.store.embedded`` in the worker's own temp directory, listening only on a unix socket there
(no TCP port to collide on), with TimescaleDB when it is installed unless
``HEADEND_EMBEDDED_TIMESCALEDB=off``; or the server ``$HEADEND_TEST_DSN`` points at (the template and
database names carry the worker's pid). ``pg_dsn`` (function): a fresh database cloned from a
migrated template, dropped after the test. ``pg_dsn`` names the superuser that owns the schema: setup
that no login may write seeds through it; the daemon, the engine and the CLI run under the documented
logins of ``tests/support/logins.py``, which the server holds once the template is migrated.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from headend.store.embedded import THROWAWAY_SETTINGS, EmbeddedPostgres, EmbeddedPostgresError
from headend.store.migrate import migrate
from tests.support.logins import create_documented_logins

T = TypeVar("T")
_counter = itertools.count()


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a private thread and event loop (safe inside pytest-asyncio)."""

    async def runner() -> T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class PgServer:
    """A PostgreSQL server for tests: admin DSN, a migrated template, fresh databases from it."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded
        self.template = f"headend_tmpl_{os.getpid()}"
        self._template_ready = False

    def dsn(self, database: str) -> str:
        return with_database(self.admin_dsn, database)

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    async def _disconnect_others(self, database: str) -> None:
        await self._admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
            "AND pid <> pg_backend_pid()"
        )

    async def ensure_template(self) -> None:
        """Create and migrate the template database once per session."""
        if self._template_ready:
            return
        await self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        await self._admin(f'CREATE DATABASE "{self.template}"')
        await migrate(self.dsn(self.template))
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await create_documented_logins(admin)
        finally:
            await admin.close()
        await self._admin(f'ALTER DATABASE "{self.template}" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true')
        await self._disconnect_others(self.template)
        self._template_ready = True

    async def create_database(self) -> str:
        """A new migrated database; returns its name."""
        await self.ensure_template()
        name = f"headend_test_{os.getpid()}_{next(_counter)}"
        for attempt in range(5):
            try:
                await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY')
                return name
            except asyncpg.ObjectInUseError:  # a TimescaleDB background worker touched the template
                if attempt == 4:
                    raise
                await self._disconnect_others(self.template)
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def drop_template(self) -> None:
        if self._template_ready:
            await self._admin(f'ALTER DATABASE "{self.template}" WITH IS_TEMPLATE false')
            await self.drop_database(self.template)


OWNER_FILE = "owner.pid"


def _cluster(base: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(base / "pg", settings=THROWAWAY_SETTINGS | {"shared_buffers": "128MB"})


def throwaway_cluster(prefix: str = "headend-pg-") -> tuple[EmbeddedPostgres, Path]:
    """A fast, non-durable embedded cluster in a new temp directory (reachable by the server user).

    The directory records the creating process, so a later session can reap it if that process
    died without its teardown (e.g. killed by a timeout).
    """
    reap_orphaned_clusters()
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    (base / OWNER_FILE).write_text(str(os.getpid()))
    return _cluster(base), base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphaned_clusters() -> None:
    """Stop and delete throwaway clusters whose creating process no longer exists."""
    for owner in Path(tempfile.gettempdir()).glob(f"headend-*/{OWNER_FILE}"):
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        base = owner.parent
        try:
            _cluster(base).stop("immediate")
        except (EmbeddedPostgresError, OSError):  # a broken leftover must not fail this session
            continue
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (``$HEADEND_TEST_DSN`` or a throwaway embedded cluster)."""
    external = os.environ.get("HEADEND_TEST_DSN")
    if external:
        server = PgServer(external, None)
        yield server
        run_sync(server.drop_template)
        return
    cluster, base = throwaway_cluster()
    try:
        cluster.start()
        server = PgServer(cluster.dsn("postgres"), cluster)
        yield server
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh, fully migrated database, dropped after the test."""
    name = run_sync(pg_server.create_database)
    yield pg_server.dsn(name)
    run_sync(lambda: pg_server.drop_database(name))


class CountingPool:
    """A pool whose ``acquire`` calls are counted: the passes a service made (each pass acquires one
    connection), e.g. against a database that is down."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self, *, timeout: float | None = None) -> object:
        self.acquired += 1
        return self.pool.acquire(timeout=timeout)
