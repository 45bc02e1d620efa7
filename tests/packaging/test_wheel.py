"""The built wheel, installed in a fresh venv away from the checkout, carries its migrations, models and
the console's templates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import asyncpg
import pytest

from tests.support.postgres import PgServer

pytestmark = pytest.mark.xdist_group("wheel")  # its module fixture is built once, on one worker

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "headend", "protocols", "simulators")

CHECK_INSTALLED = """
import pathlib, sys
import headend, protocols
from headend.store.migrate import discover
from protocols.models import model_names
from protocols.modbus import load_modbus_model
from headend.drivers.base import load_model

for module in (headend, protocols):
    assert pathlib.Path(module.__file__).is_relative_to(sys.prefix), module.__file__
labels = [m.label for m in discover()]
assert labels and labels[0] == "0001_core", labels
names = model_names()
assert "dlt645-generic" in names and "eastron_sdm630" in names, names
assert load_modbus_model("eastron_sdm630").points
assert load_model("dlt645-generic")["editions"]
import headend.web
web = pathlib.Path(headend.web.__file__).parent  # the console's templates and static files
assert (web / "templates" / "meter.html").is_file() and (web / "static" / "console.css").is_file()
print(len(labels), len(names))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A venv with only the wheel installed (no deps), and an environment that supplies the deps."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif path.exists():
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(source)], cwd=base)
    (wheel,) = (base / "dist").glob("headend-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    _run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)], cwd=base)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HEADEND_"))}
    # the dependencies come from this test run's environment; its site-packages' .pth files (the
    # editable install of the checkout) are not processed for PYTHONPATH entries
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return venv, env


@pytest.mark.timeout(240)
def test_installed_wheel_loads_migrations_and_models(installed: tuple[Path, dict[str, str]], tmp_path):
    venv, env = installed
    out = _run([str(venv / "bin" / "python"), "-c", CHECK_INSTALLED], cwd=tmp_path, env=env)
    migrations, models = map(int, out.split())
    assert migrations >= 6 and models >= 5


@pytest.mark.timeout(240)
async def test_installed_headend_db_migrate_builds_the_schema(
    installed: tuple[Path, dict[str, str]], pg_server: PgServer, tmp_path: Path
) -> None:
    venv, env = installed
    admin = await asyncpg.connect(pg_server.admin_dsn)
    name = "headend_wheel_migrate"
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        headend = str(venv / "bin" / "headend")
        out = _run([headend, "db", "migrate", "--dsn", pg_server.dsn(name)], cwd=tmp_path, env=env)
        assert "applied 0001_core" in out and "up to date" not in out
        again = _run([headend, "db", "migrate", "--dsn", pg_server.dsn(name)], cwd=tmp_path, env=env)
        assert "up to date" in again
        conn = await asyncpg.connect(pg_server.dsn(name))
        try:
            assert await conn.fetchval("SELECT to_regclass('meters')") is not None
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
