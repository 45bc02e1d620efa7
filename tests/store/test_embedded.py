"""The embedded server manager and DSN resolution, with the real PostgreSQL binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from headend.store import maintenance
from headend.store.dsn import redact, resolve_dsn
from headend.store.embedded import (
    THROWAWAY_SETTINGS,
    TIMESCALEDB_ENV,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_bindir,
)
from headend.store.migrate import migrate
from tests.support.postgres import OWNER_FILE, reap_orphaned_clusters, throwaway_cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def base_dir():
    """A temp dir the unprivileged server user can traverse (pytest's tmp_path is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="headend-emb-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_start_is_idempotent_and_data_survives_restart(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "pg", settings=THROWAWAY_SETTINGS)
    try:
        dsn = pg.start()
        pid = (pg.data_dir / "postmaster.pid").read_text().split()[0]
        pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)", database="headend")
        assert pg.start() == dsn  # reuses the running server
        assert (pg.data_dir / "postmaster.pid").read_text().split()[0] == pid
        pg.stop()
        assert not pg.is_running()
        pg.start()
        assert pg.psql("SELECT v FROM kept", database="headend") == "42"
        owner = (pg.data_dir).stat().st_uid
        assert owner != 0 and (os.geteuid() != 0 or owner == pg.user.uid)
        assert pg.psql("SHOW listen_addresses") == ""  # unix socket only
    finally:
        pg.stop("immediate")


def test_works_for_an_unprivileged_user(base_dir: Path) -> None:
    """As root, run the manager as 'nobody' with the system python (the venv's lives under /root)."""
    state = base_dir / "state"
    state.mkdir()
    script = (
        "from headend.store.embedded import EmbeddedPostgres\n"
        "pg = EmbeddedPostgres()\n"
        "pg.start()\n"
        "print(pg.psql('SELECT current_database()', database='headend'))\n"
        "pg.stop()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HEADEND_STATE_DIR": str(state)}
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)
        cmd, kwargs = ["/usr/bin/python3", "-c", script], {"user": 65534, "group": 65534, "extra_groups": []}
    else:
        cmd, kwargs = [sys.executable, "-c", script], {}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, **kwargs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "headend"
    assert (state / "postgres" / "data").stat().st_uid == (65534 if os.geteuid() == 0 else os.getuid())


def test_clusters_of_dead_sessions_are_reaped() -> None:
    pg, base = throwaway_cluster("headend-reap-")
    pg.start()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (base / OWNER_FILE).write_text(str(dead.pid))  # as if the session had been killed
    reap_orphaned_clusters()
    assert not base.exists()
    assert not pg.is_initialized()


def test_missing_binaries_give_install_instructions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEADEND_PG_BINDIR", str(tmp_path))
    with pytest.raises(EmbeddedPostgresError, match="apt-get install postgresql"):
        find_bindir()


@pytest.mark.parametrize("choice", ["off", "auto"])
async def test_timescaledb_switch_decides_the_preload_and_the_storage_layout(
    choice: str, monkeypatch: pytest.MonkeyPatch, base_dir: Path
) -> None:
    """``off`` gives the native layout even where TimescaleDB is installed; ``auto`` uses it if installed."""
    monkeypatch.setenv(TIMESCALEDB_ENV, choice)
    monkeypatch.delenv("HEADEND_STORAGE_MODE", raising=False)
    pg = EmbeddedPostgres(base_dir / "pg", settings=THROWAWAY_SETTINGS)
    expected = choice == "auto" and pg.timescaledb_installed()
    try:
        dsn = pg.start()
        assert pg.psql("SHOW shared_preload_libraries") == ("timescaledb" if expected else "")
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            assert await maintenance.storage_mode(conn) == ("timescale" if expected else "native")
        finally:
            await conn.close()
    finally:
        pg.stop("immediate")


def test_timescaledb_required_but_missing_fails_before_initdb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = find_bindir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "lib").mkdir()  # a PostgreSQL install without timescaledb.so
    for tool in ("initdb", "pg_ctl", "postgres"):
        (bindir / tool).symlink_to(real / tool)
    monkeypatch.setenv(TIMESCALEDB_ENV, "on")
    pg = EmbeddedPostgres(tmp_path / "pg", bindir=bindir)
    with pytest.raises(EmbeddedPostgresError, match=f"{TIMESCALEDB_ENV}=on but TimescaleDB is not installed"):
        pg.start()
    assert not pg.is_initialized()
    monkeypatch.setenv(TIMESCALEDB_ENV, "maybe")
    with pytest.raises(EmbeddedPostgresError, match=f"{TIMESCALEDB_ENV} must be one of auto, on, off"):
        pg.start()


def test_dsn_precedence(monkeypatch: pytest.MonkeyPatch, base_dir: Path) -> None:
    monkeypatch.setenv("HEADEND_DSN", "postgresql://env@db.example/headend")
    assert resolve_dsn("postgresql://explicit@h/x") == "postgresql://explicit@h/x"
    assert resolve_dsn() == "postgresql://env@db.example/headend"
    monkeypatch.delenv("HEADEND_DSN")
    monkeypatch.setenv("HEADEND_STATE_DIR", str(base_dir / "state"))
    try:
        dsn = resolve_dsn()
        assert f"host={base_dir}/state/postgres/run" in dsn
        assert EmbeddedPostgres().is_running()
    finally:
        EmbeddedPostgres().stop("immediate")


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://daemon:s3cret@db:5432/headend") == "postgresql://daemon:***@db:5432/headend"
    assert redact("postgresql://daemon@db/headend") == "postgresql://daemon@db/headend"
