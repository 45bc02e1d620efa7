"""The web console for tests: ``headend web`` as a real process on a held 127.0.0.1 port, connected
with the documented desk and reporting logins, and an HTTP client that signs in as a browser does."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import cli
from tests.support.logins import desk_dsn, report_dsn
from tests.support.operators import PASSWORD
from tests.support.ports import free_port
from tests.support.waiting import wait_until_sync

_SIGNIN_FIELD = re.compile(r'name="signin" value="([^"]+)"')


def console_config(path: Path, pg_dsn: str, **settings: str | int | bool) -> Path:
    """A config file whose ``[web]`` names the desk and reporting logins of ``pg_dsn``'s database."""
    lines = ["[web]", f'desk_dsn = "{desk_dsn(pg_dsn)}"', f'report_dsn = "{report_dsn(pg_dsn)}"']
    for key, value in settings.items():
        rendered = (
            str(value).lower()
            if isinstance(value, bool)
            else repr(value)
            if isinstance(value, str)
            else value
        )
        lines.append(f"{key} = {rendered}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n")
    return path


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/openapi.json", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_console(pg_dsn: str, tmp_path: Path, **settings: str | int | bool) -> Iterator[str]:
    """``headend web`` serving the test database; yields its base URL; stopped after the block."""
    with console_process(pg_dsn, tmp_path, (), **settings) as (url, _):
        yield url


@contextmanager
def console_process(
    pg_dsn: str, tmp_path: Path, options: Sequence[str], **settings: str | int | bool
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``headend web OPTIONS`` serving the test database; yields its base URL and its process."""
    config = console_config(tmp_path / "web.toml", pg_dsn, **settings)
    port = free_port()
    process = cli.start("web", "--listen", f"127.0.0.1:{port}", "--config", str(config), *options)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_sync(lambda: _answers(url) or process.poll() is not None, 30, "the console to answer")
        if process.poll() is not None:
            raise AssertionError(
                f"headend web exited {process.returncode}: {process.stderr and process.stderr.read()}"
            )
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def signed_in(url: str, operator: str, password: str = PASSWORD) -> httpx.Client:
    """A client with a session cookie of ``operator`` (as a browser gets it: form, then cookie)."""
    client = httpx.Client(base_url=url, timeout=10)
    response = sign_in(client, operator, password)
    assert response.status_code == 303 and response.headers["location"] == "/", response.text[:500]
    return client


def sign_in(client: httpx.Client, operator: str, password: str) -> httpx.Response:
    """Post the sign-in form as a browser does (its double-submit field from the form page)."""
    form = client.get("/signin")
    match = _SIGNIN_FIELD.search(form.text)
    assert match, form.text[:500]
    data = {"operator": operator, "password": password, "signin": match.group(1)}
    return client.post("/signin", data=data)


def csrf_of(client: httpx.Client) -> str:
    """The CSRF token of the client's session."""
    token = client.get("/api/me").json()["csrf"]
    assert isinstance(token, str)
    return token
