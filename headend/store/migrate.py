"""Schema migrations: numbered SQL files applied in order, each in a transaction, under an advisory lock.

Files are ``NNNN_name.sql``, or a pair ``NNNN_name.native.sql`` / ``NNNN_name.timescale.sql`` when the
two storage modes need different DDL. Each applied migration is recorded with the SHA-256 of the
file that ran; editing an applied file is detected and stops ``migrate``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

# shipped inside the package (headend/store/migrations/*.sql), found the same way from a wheel
MIGRATIONS_DIR: Traversable = files("headend.store") / "migrations"
LOCK_KEY = 0x68656164_0001  # "head" + 1: serialises concurrent migrate runs
MODES = ("native", "timescale")
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>native|timescale))?\.sql$")


class MigrationError(RuntimeError):
    """The migrations directory or the database's migration history is inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration and its file(s): key ``None`` for shared DDL, else the storage mode."""

    version: int
    name: str
    files: dict[str | None, Traversable]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def file_for(self, mode: str) -> tuple[str | None, Traversable]:
        if None in self.files:
            return None, self.files[None]
        return mode, self.files[mode]


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    variant: str | None
    checksum: str
    applied_at: datetime


@dataclass(slots=True)
class MigrationStatus:
    """What ``headend db status`` shows."""

    mode: str | None
    mode_reason: str
    timescaledb_version: str | None
    applied: list[AppliedMigration] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def checksum(path: Traversable) -> str:
    """SHA-256 of a migration file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def discover(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; raises on malformed or inconsistent names.

    No migration at all is an error too: a package missing its migrations must never look up to date.
    """
    found: dict[int, Migration] = {}
    sql_files = [p for p in directory.iterdir() if p.name.endswith(".sql")] if directory.is_dir() else []
    if not sql_files:
        raise MigrationError(f"no migrations found in {directory}: the installation is incomplete")
    for path in sorted(sql_files, key=lambda p: p.name):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: expected NNNN_name.sql or NNNN_name.(native|timescale).sql")
        version, name, variant = int(match["version"]), match["name"], match["variant"]
        migration = found.setdefault(version, Migration(version, name, {}))
        if migration.name != name or variant in migration.files:
            raise MigrationError(f"{path.name}: version {version:04d} is already used by {migration.label}")
        migration.files[variant] = path
    for migration in found.values():
        kinds = set(migration.files)
        if None in kinds and len(kinds) > 1:
            raise MigrationError(f"{migration.label}: has both a shared file and mode-specific files")
        if None not in kinds and kinds != set(MODES):
            raise MigrationError(f"{migration.label}: needs both .native.sql and .timescale.sql")
    return [found[v] for v in sorted(found)]


@asynccontextmanager
async def _connection(target: str | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        try:
            yield conn
        finally:
            await conn.close()
    else:
        yield target


async def _history(conn: asyncpg.Connection) -> dict[int, AppliedMigration]:
    if await conn.fetchval("SELECT to_regclass('headend_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, name, variant, checksum, applied_at FROM headend_migrations")
    return {r["version"]: AppliedMigration(**dict(r)) for r in rows}


async def _recorded_mode(conn: asyncpg.Connection) -> str | None:
    if await conn.fetchval("SELECT to_regclass('headend_settings')") is None:
        return None
    found: str | None = await conn.fetchval("SELECT value FROM headend_settings WHERE key = 'storage_mode'")
    return found


async def detect_mode(conn: asyncpg.Connection) -> tuple[str, str]:
    """Which storage mode this server supports, and why (uses pg_extension / pg_available_extensions)."""
    installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    available = await conn.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if installed is None and available is None:
        return "native", "the timescaledb extension is not available on this server"
    try:
        preloaded = "timescaledb" in await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    except asyncpg.InsufficientPrivilegeError:
        # a schema owner that is not a superuser (nor in pg_read_all_settings) cannot read the setting;
        # the extension can only have been created in this database if the server preloads it
        preloaded = installed is not None
    if not preloaded:
        return "native", "timescaledb is available but not in shared_preload_libraries"
    license_ = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    if license_ == "apache":
        return "native", "timescaledb is an Apache-only build (no compression or continuous aggregates)"
    return "timescale", f"timescaledb {installed or available} is available"


def _verify(history: dict[int, AppliedMigration], migrations: list[Migration]) -> list[str]:
    by_version = {m.version: m for m in migrations}
    problems = []
    for version, applied in sorted(history.items()):
        migration = by_version.get(version)
        label = f"{version:04d}_{applied.name}"
        if migration is None or applied.variant not in migration.files:
            problems.append(f"{label} ({applied.variant or 'shared'}) was applied but its file is missing")
            continue
        actual = checksum(migration.files[applied.variant])
        if actual != applied.checksum:
            problems.append(
                f"{label} was edited after it was applied: file checksum {actual[:12]}, "
                f"applied {applied.checksum[:12]}; add a new migration instead"
            )
    return problems


async def migrate(
    target: str | asyncpg.Connection, *, mode: str | None = None, directory: Traversable = MIGRATIONS_DIR
) -> list[str]:
    """Apply pending migrations; return the labels applied (empty when up to date).

    ``mode`` forces ``native`` or ``timescale`` (default: ``$HEADEND_STORAGE_MODE`` or detection).
    """
    migrations = discover(directory)
    forced = mode or os.environ.get("HEADEND_STORAGE_MODE") or None
    if forced is not None and forced not in MODES:
        source = "--mode" if mode else "HEADEND_STORAGE_MODE"
        raise MigrationError(f"{source}: storage mode must be one of {', '.join(MODES)}, not {forced!r}")
    async with _connection(target) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            if await conn.fetchval("SELECT to_regclass('headend_migrations')") is None:
                await conn.execute(
                    """CREATE TABLE headend_migrations (
                           version    integer PRIMARY KEY,
                           name       text NOT NULL,
                           variant    text,
                           checksum   text NOT NULL,
                           applied_at timestamptz NOT NULL DEFAULT now())"""
                )
            history = await _history(conn)
            problems = _verify(history, migrations)
            if problems:
                raise MigrationError("; ".join(problems))
            pending = [m.label for m in migrations if m.version not in history]
            if pending and not await conn.fetchval("SELECT has_schema_privilege('public', 'CREATE')"):
                raise MigrationError(
                    f"{len(pending)} migration(s) pending ({', '.join(pending)}) and this login may not"
                    " change the schema: run `headend db migrate` as the schema owner"
                )
            recorded = await _recorded_mode(conn)
            if recorded and forced and recorded != forced:
                raise MigrationError(f"database is in {recorded} mode; cannot migrate it as {forced}")
            active = recorded or forced or (await detect_mode(conn))[0]
            applied: list[str] = []
            for migration in migrations:
                if migration.version in history:
                    continue
                variant, path = migration.file_for(active)
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO headend_migrations (version, name, variant, checksum)"
                        " VALUES ($1, $2, $3, $4)",
                        migration.version,
                        migration.name,
                        variant,
                        checksum(path),
                    )
                applied.append(migration.label)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def status(
    target: str | asyncpg.Connection, *, directory: Traversable = MIGRATIONS_DIR
) -> MigrationStatus:
    """Applied and pending migrations, problems (edited/missing files) and the storage mode."""
    migrations = discover(directory)
    async with _connection(target) as conn:
        history = await _history(conn)
        recorded = await _recorded_mode(conn)
        detected, reason = await detect_mode(conn)
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if recorded:
        joiner = f" ({reason})" if recorded == detected else f"; now {detected}: {reason}"
        reason = f"recorded at migration{joiner}"
    return MigrationStatus(
        mode=recorded,
        mode_reason=reason if recorded else f"not migrated yet; would use {detected}: {reason}",
        timescaledb_version=version,
        applied=[history[v] for v in sorted(history)],
        pending=[m.label for m in migrations if m.version not in history],
        problems=_verify(history, migrations),
    )
