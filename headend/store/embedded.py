"""A private PostgreSQL server under the state directory, run from the system's PostgreSQL binaries.

The server listens only on a unix socket in a directory private to the server's user (no TCP), so
local ``trust`` authentication reaches nobody else. Run as root, ``initdb`` and ``postgres`` run as
the unprivileged ``postgres`` system user (or a created ``headend`` system user); the data directory
belongs to that user.

TimescaleDB is preloaded when it is installed for these binaries, unless
``$HEADEND_EMBEDDED_TIMESCALEDB`` says otherwise: ``auto`` (default), ``on`` (required: refuse to
start without it) or ``off`` (never: the migrations then choose the native layout).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from headend.config_paths import state_dir

PORT = 5432
DATABASE = "headend"
SUPERUSER = "postgres"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin for ".s.PGSQL.5432"

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. Install them, e.g. "
    "`apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora/RHEL) or "
    "`brew install postgresql@15` (macOS); or point HEADEND_PG_BINDIR at their directory; or set "
    "HEADEND_DSN to use an existing PostgreSQL/TimescaleDB server."
)

TIMESCALEDB_ENV = "HEADEND_EMBEDDED_TIMESCALEDB"
TIMESCALEDB_CHOICES = ("auto", "on", "off")

# Server settings for the embedded cluster: sized for a head-end on a small machine. Durability
# settings (fsync, synchronous_commit, full_page_writes) stay at their safe defaults.
DEFAULT_SETTINGS: dict[str, str] = {
    "shared_buffers": "256MB",
    "wal_buffers": "16MB",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "on",
    "max_connections": "100",
    # short OLTP statements: compiling one whose estimate is high (billing's lineage walk) costs
    # most of a second per run, far more than executing it
    "jit": "off",
}

# For throwaway test clusters only: nothing survives a machine crash, which tests never need.
THROWAWAY_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, initialised, started or stopped."""


@dataclass(frozen=True, slots=True)
class ServerUser:
    """The operating-system account that owns the data directory and runs the server."""

    name: str
    uid: int
    gid: int


def timescaledb_choice() -> str:
    """``$HEADEND_EMBEDDED_TIMESCALEDB`` validated: ``auto`` (the default), ``on`` or ``off``."""
    choice = os.environ.get(TIMESCALEDB_ENV, "").strip().lower() or "auto"
    if choice not in TIMESCALEDB_CHOICES:
        raise EmbeddedPostgresError(
            f"{TIMESCALEDB_ENV} must be one of {', '.join(TIMESCALEDB_CHOICES)}, not {choice!r}"
        )
    return choice


def find_bindir() -> Path:
    """Locate PostgreSQL server binaries: ``$HEADEND_PG_BINDIR``, the newest Debian-style
    ``/usr/lib/postgresql/*/bin``, ``pg_config --bindir``, or ``initdb`` on ``PATH``."""
    explicit = os.environ.get("HEADEND_PG_BINDIR")
    if explicit:
        if all((Path(explicit) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(explicit)
        raise EmbeddedPostgresError(f"HEADEND_PG_BINDIR={explicit} lacks initdb or pg_ctl. {INSTALL_HINT}")
    candidates: list[Path] = []
    versioned = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0],
        reverse=True,
    )
    candidates.extend(versioned)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise EmbeddedPostgresError(INSTALL_HINT)


def server_user() -> ServerUser | None:
    """The account to run PostgreSQL as: ``None`` (the current user) unless running as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "headend"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ServerUser(name, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "headend"],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam("headend")
    return ServerUser("headend", entry.pw_uid, entry.pw_gid)


def _traversable_by(path: Path, user: ServerUser) -> bool:
    st = path.stat()
    if st.st_uid == user.uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


class EmbeddedPostgres:
    """Owns one private cluster: ``<root>/data``, its socket directory and ``<root>/server.log``."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.root = (root or state_dir() / "postgres").absolute()
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._bindir = bindir
        self._user: ServerUser | None = None
        self._user_known = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        """Directory of the PostgreSQL binaries used for this cluster."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's unix socket (a short path under /tmp if the root's is too long)."""
        preferred = self.root / "run"
        if len(str(preferred / f".s.PGSQL.{PORT}")) <= SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"headend-pg-{os.geteuid()}-{digest}"

    def timescaledb_installed(self) -> bool:
        """True if the TimescaleDB library is installed for these PostgreSQL binaries."""
        return (self.bindir.parent / "lib" / "timescaledb.so").is_file()

    def preloads_timescaledb(self) -> bool:
        """Whether a (re)start preloads TimescaleDB, as ``$HEADEND_EMBEDDED_TIMESCALEDB`` decides."""
        choice = timescaledb_choice()
        if choice == "off":
            return False
        installed = self.timescaledb_installed()
        if choice == "on" and not installed:
            raise EmbeddedPostgresError(
                f"{TIMESCALEDB_ENV}=on but TimescaleDB is not installed for the PostgreSQL in {self.bindir} "
                f"(no {self.bindir.parent / 'lib' / 'timescaledb.so'})"
            )
        return installed

    def dsn(self, database: str = DATABASE) -> str:
        """Connection string for asyncpg/psql over the unix socket."""
        return f"postgresql://{SUPERUSER}@/{quote(database)}?host={quote(str(self.socket_dir))}&port={PORT}"

    def is_initialized(self) -> bool:
        """True once ``initdb`` has created the data directory."""
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        """True if a postmaster is serving this data directory."""
        if not self.is_initialized():
            return False
        result = self._run([self.bindir / "pg_ctl", "status", "-D", self.data_dir], check=False)
        return result.returncode == 0

    def start(self) -> str:
        """Initialise if needed, start unless running, ensure the ``headend`` database; return its DSN."""
        with self._lock():
            if not self.is_running():
                settings = self._server_settings()  # a bad TimescaleDB choice fails before initdb
                if not self.is_initialized():
                    self._initdb()
                self._write_config(settings)
                self._prepare_socket_dir()
                self.log_file.touch(exist_ok=True)
                self._chown(self.log_file)
                pg_ctl = self.bindir / "pg_ctl"
                result = self._run(
                    [pg_ctl, "start", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", "60"], check=False
                )
                if result.returncode != 0:
                    raise EmbeddedPostgresError(
                        f"PostgreSQL failed to start (pg_ctl exit {result.returncode}): "
                        f"{result.stderr.strip()}\n{self._log_tail()}"
                    )
            self._ensure_database(DATABASE)
        return self.dsn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (``mode``: smart, fast or immediate)."""
        with self._lock():
            if not self.is_running():
                return
            pg_ctl = self.bindir / "pg_ctl"
            result = self._run([pg_ctl, "stop", "-D", self.data_dir, "-m", mode, "-w"], check=False)
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"pg_ctl stop failed: {result.stderr.strip()}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL string through ``psql`` as the superuser; return its unaligned output."""
        result = self._run(
            [
                self.bindir / "psql",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-p",
                str(PORT),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    # -- internals ----------------------------------------------------------------------------

    @property
    def user(self) -> ServerUser | None:
        if not self._user_known:
            self._user = server_user()
            self._user_known = True
        return self._user

    def _run(self, args: list[object], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        user = self.user
        cwd = self.root if self.root.is_dir() else "/"
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            check=check,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
        )

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.uid, self.user.gid)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f"{self.root.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _initdb(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        self._chown(self.root)
        if self.user is not None:
            blocked = [p for p in (self.root, *self.root.parents) if not _traversable_by(p, self.user)]
            if blocked:
                raise EmbeddedPostgresError(
                    f"{blocked[-1]} is not traversable by the server user {self.user.name!r}; "
                    "set HEADEND_STATE_DIR to a directory it can reach (for example /var/lib/headend)"
                )
        result = self._run(
            [
                self.bindir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-locale",
                "--auth-local=trust",
                "--auth-host=reject",
            ],
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\ninclude_if_exists = 'headend.conf'\n")

    def _server_settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": "",
            "port": str(PORT),
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            **self.settings,
        }
        if "shared_preload_libraries" not in settings and self.preloads_timescaledb():
            settings["shared_preload_libraries"] = "timescaledb"
        return settings

    def _write_config(self, settings: Mapping[str, str]) -> None:
        lines = ["# Written by headend on every start; edit headend.store.embedded instead."]
        lines += [f"{key} = '{value}'" for key, value in settings.items()]
        path = self.data_dir / "headend.conf"
        path.write_text("\n".join(lines) + "\n")
        self._chown(path)

    def _prepare_socket_dir(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.chmod(0o700)
        self._chown(self.socket_dir)

    def _ensure_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
