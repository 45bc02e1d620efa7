"""``headend web`` refuses what it must not serve on, in one line, and other commands never load the
web stack."""

from __future__ import annotations

from pathlib import Path

from tests.support import cli
from tests.support.logins import daemon_dsn, report_dsn
from tests.support.web import console_config


def test_the_cli_starts_without_the_web_stack() -> None:
    """``headend --help`` (and so every other command's start) imports none of the console's stack."""
    result = cli.headend("--help", env=cli.cli_env(PYTHONPROFILEIMPORTTIME="1"))
    assert result.returncode == 0
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "typer" in imported  # the probe sees the imports
    assert not imported & {"fastapi", "uvicorn", "starlette", "jinja2", "multipart"}


def test_refusals_are_one_line(pg_dsn: str, tmp_path: Path) -> None:
    config = console_config(tmp_path / "web.toml", pg_dsn)
    remote = cli.headend("web", "--listen", "0.0.0.0:8080", "--config", str(config))
    assert remote.returncode == 1
    assert remote.stderr == (
        "error: --listen 0.0.0.0:8080: not a loopback address; add --allow-remote to serve other machines\n"
    )
    bad = cli.headend("web", "--listen", "localhost", "--config", str(config))
    assert (bad.returncode, bad.stderr) == (1, "error: --listen must be host:port, got 'localhost'\n")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    none = cli.headend("web", "--config", str(empty), env=cli.cli_env(drop=("HEADEND_WEB_DESK_DSN",)))
    assert none.returncode == 1 and none.stderr.startswith(
        "error: the console needs [web] desk_dsn and report_dsn"
    )
    for desk, why in (
        (pg_dsn, "is a superuser or owns the schema; use the desk login"),
        (daemon_dsn(pg_dsn), "is the daemon's; use the desk login"),
        (report_dsn(pg_dsn), "is not in headend_billing"),
    ):
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(f'[web]\ndesk_dsn = "{desk}"\nreport_dsn = "{report_dsn(pg_dsn)}"\n')
        refused = cli.headend("web", "--config", str(wrong), as_owner=True)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("error: [web] desk_dsn: login ") and why in refused.stderr
