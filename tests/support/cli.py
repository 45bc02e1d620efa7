"""Running ``headend`` the way a user does, in one place.

- :func:`headend`: a real process, blocking; for tests without a simulator in their own event loop.
  The process is forked from this worker's warm ``headend`` (tests/support/zygote.py: the CLI and
  its command modules imported once, about 0.3 s of CPU saved per command), with its own argv,
  environment, stdio and exit code; a fresh ``python -m headend.cli`` where the environment sets
  ``PYTHON*`` variables of its own or ``HEADEND_TESTS_FRESH_CLI=1``.
- :func:`headend_async`: the same process awaited, while the test's loop keeps serving its
  simulated buses, concentrators or listeners.
- :func:`spawn` / :func:`finish` / :func:`stop`: a long-running command (``sim``, ``listen``) in the
  test's event loop; :func:`start`: the daemon (``run``) as a ``subprocess.Popen``.
- :func:`headend_in_process`: ``headend.cli.main`` in this process, for the many short refusal cases
  of ``tests/inputs`` (a traceback escaping ``main`` is kept in ``stderr``); :func:`headend_prompted`:
  the same with typed answers to hidden prompts (typer's test runner stands in for the terminal).

Every runner returns a :class:`CliResult` (``returncode, stdout, stderr``; unpacks as a tuple).
``env`` replaces the process environment when given (e.g. ``operator_env()``); ``cli_env`` builds one.

Every runner runs the command under the login docs/operations.md says runs it
(:func:`documented_login`): a superuser DSN in ``--dsn``, ``$HEADEND_DSN`` or the ``--config`` file
(``$HEADEND_CONFIG``) is turned into that login's, so ``pg_dsn`` can be passed as a user passes theirs
and a missing grant fails the test. ``as_owner=True`` keeps the superuser, for a test that says why.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import tomllib
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from typer.testing import CliRunner

from headend.cli import app, main
from tests.support.logins import DAEMON_LOGIN, DESK_LOGIN, REPORT_LOGIN, instead_of_superuser
from tests.support.waiting import wait_until_sync

COMMAND = (sys.executable, "-m", "headend.cli")


class CliResult(NamedTuple):
    """Exit code and output of one ``headend`` run."""

    returncode: int
    stdout: str
    stderr: str


def cli_env(
    base: Mapping[str, str] | None = None, *, drop: Iterable[str] = (), **extra: str
) -> dict[str, str]:
    """``base`` (default: this process's environment) without ``drop``, plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in set(drop)}
    return env | extra


def documented_login(args: Sequence[str]) -> str | None:
    """The login docs/operations.md says runs ``headend ARGS``: the schema owner's (None) for ``db``
    and the bootstrap operator, the daemon's for ``run``, ``listen`` and ``billing bill``, the
    reporting login's for reports and exports (``readings``, ``lineloss``, ``report``, ``export``),
    else the desk's (the operators' CLI)."""
    command = tuple(args[:2])
    if command[:1] == ("db",) or (command[:1] == ("operators",) and "--bootstrap" in args):
        return None
    if command[:1] in (("run",), ("listen",)) or command == ("billing", "bill"):
        return DAEMON_LOGIN
    if command[:1] in (("readings",), ("lineloss",), ("export",), ("report",)):
        return REPORT_LOGIN
    return DESK_LOGIN


def _as(login: str | None, dsn: str) -> str:
    return dsn if login is None else instead_of_superuser(login, dsn)


def _config_under(login: str | None, path: Path) -> None:
    """Turn a superuser ``[database] dsn`` of the config file at ``path`` into ``login``'s."""
    try:
        text = path.read_text()
        dsn = tomllib.loads(text).get("database", {}).get("dsn")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # the command itself reports what is wrong with the file
    if isinstance(dsn, str) and _as(login, dsn) != dsn:
        path.write_text(text.replace(f'"{dsn}"', f'"{_as(login, dsn)}"'))


def as_documented_login(
    args: Sequence[str], env: Mapping[str, str] | None, as_owner: bool = False
) -> tuple[list[str], dict[str, str] | None]:
    """``args`` and ``env`` with every superuser DSN they give ``headend`` (``--dsn``,
    ``$HEADEND_DSN``, the config file's) turned into the documented login's (``as_owner``: kept)."""
    login = None if as_owner else documented_login(args)
    out = list(args)
    for i, arg in enumerate(out):
        if arg.startswith("--dsn="):
            out[i] = "--dsn=" + _as(login, arg.removeprefix("--dsn="))
        elif i > 0 and out[i - 1] == "--dsn":
            out[i] = _as(login, arg)
        elif i > 0 and out[i - 1] == "--config":
            _config_under(login, Path(arg))
    base = os.environ if env is None else env
    if "--config" not in out and base.get("HEADEND_CONFIG"):
        _config_under(login, Path(base["HEADEND_CONFIG"]))
    dsn = base.get("HEADEND_DSN")
    if dsn is not None and _as(login, dsn) != dsn:
        env = {**base, "HEADEND_DSN": _as(login, dsn)}
    return out, None if env is None else dict(env)


class _Zygote:
    """This test worker's warm ``headend`` (tests/support/zygote.py), started on first use."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.socket = Path()
        self._starting = threading.Lock()  # headend_async runs commands from several threads
        atexit.register(self.close)

    def _ready(self) -> Path:
        with self._starting:
            return self._start_once()

    def _start_once(self) -> Path:
        if self.process is None or self.process.poll() is not None:
            self.socket = Path(tempfile.mkdtemp(prefix="headend-zygote-")) / "socket"
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.zygote", str(self.socket)], stdin=subprocess.PIPE
            )
            self.process = process
            wait_until_sync(
                lambda: self.socket.exists() or process.poll() is not None, 60, "the warm headend's socket"
            )
            if process.poll() is not None:
                raise RuntimeError(f"the warm headend exited ({process.returncode}) before it served")
        return self.socket

    def close(self) -> None:
        """Stop the warm process (its children run on) and remove its socket's directory."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.socket.parent, ignore_errors=True)

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float) -> CliResult:
        """``headend ARGV`` in a child forked by the warm process; stdin is /dev/null."""
        request = {"argv": list(argv), "env": dict(os.environ if env is None else env), "cwd": os.getcwd()}
        data = (json.dumps(request) + "\n").encode()
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            open(os.devnull, "rb") as devnull,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn,
        ):
            conn.connect(str(self._ready()))
            sent = socket.send_fds(conn, [data], [devnull.fileno(), out.fileno(), err.fileno()])
            conn.sendall(data[sent:])
            conn.settimeout(timeout)
            answers = conn.makefile("r")
            pid = int(answers.readline())
            try:
                status = int(answers.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(["headend", *argv], timeout) from None
            return CliResult(status, _text(out), _text(err))


def _text(file: IO[bytes]) -> str:
    """A command's output as ``subprocess.run(text=True)`` gives it (universal newlines)."""
    file.seek(0)
    return file.read().decode().replace("\r\n", "\n").replace("\r", "\n")


_zygote = _Zygote()
FRESH_INTERPRETERS = os.environ.get("HEADEND_TESTS_FRESH_CLI") == "1"


def _fresh(env: Mapping[str, str] | None) -> bool:
    """Whether ``headend`` must start a fresh interpreter: when asked to, or when ``env`` sets the
    interpreter's own variables (``PYTHON*``) otherwise than the warm process started with."""
    if FRESH_INTERPRETERS or env is None:
        return FRESH_INTERPRETERS
    names = {k for k in (*env, *os.environ) if k.startswith("PYTHON")}
    return any(env.get(k) != os.environ.get(k) for k in names)


def headend(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    stdin_closed: bool = False,
    as_owner: bool = False,
) -> CliResult:
    """``headend ARGS`` as a process; waits for it (``stdin_closed``: stdin is /dev/null). The process
    is forked from this worker's warm ``headend`` (stdin always /dev/null), or a fresh interpreter
    where :func:`_fresh` says so."""
    argv, env = as_documented_login(args, env, as_owner)
    if not _fresh(env):
        return _zygote.run(argv, env, timeout)
    done = subprocess.run(
        [*COMMAND, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL if stdin_closed else None,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def headend_peak_rss(*args: str, timeout: float = 60, as_owner: bool = False) -> tuple[CliResult, int]:
    """``headend ARGS`` in a fresh interpreter that reports its own peak resident memory (kB) once the
    command returned: the result (that report left out of ``stderr``) and the peak."""
    argv, env = as_documented_login(args, None, as_owner)
    script = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['headend', *{argv!r}]\n"
        "code = 0\n"
        "try:\n    runpy.run_module('headend.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code or 0\n"
        "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env
    )
    *rest, last = done.stderr.splitlines() or [""]
    peak = int(last.split()[1]) if last.startswith("peak_rss_kb ") else 0
    return CliResult(done.returncode, done.stdout, "\n".join(rest)), peak


def start(
    *args: str, env: Mapping[str, str] | None = None, as_owner: bool = False, merged: bool = False
) -> subprocess.Popen[str]:
    """``headend ARGS`` (a daemon: ``run``; ``demo``) started as a blocking-API process: stderr piped as
    text, stdout discarded (``merged``: both piped together as ``stdout``); not waited for."""
    argv, env = as_documented_login(args, env, as_owner)
    return subprocess.Popen(
        [*COMMAND, *argv],
        stdout=subprocess.PIPE if merged else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
    )


async def spawn(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
    as_owner: bool = False,
) -> asyncio.subprocess.Process:
    """``headend ARGS`` started as a process, stdout and stderr piped unless said otherwise (None
    inherits the test's, ``asyncio.subprocess.DEVNULL`` discards); not waited for."""
    argv, env = as_documented_login(args, env, as_owner)
    return await asyncio.create_subprocess_exec(*COMMAND, *argv, stdout=stdout, stderr=stderr, env=env)


async def finish(process: asyncio.subprocess.Process, timeout: float = 60) -> CliResult:
    """Wait for a spawned process to exit; its code and whole output."""
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), (err or b"").decode())


async def stop(process: asyncio.subprocess.Process, timeout: float = 20) -> CliResult:
    """SIGTERM a spawned process (if it still runs) and :func:`finish` it."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await finish(process, timeout)


async def headend_async(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 90, as_owner: bool = False
) -> CliResult:
    """``headend ARGS`` as a process, awaited without blocking this event loop (forked from the warm
    ``headend`` as :func:`headend`)."""
    if _fresh(env):
        return await finish(await spawn(*args, env=env, as_owner=as_owner), timeout)
    argv, env = as_documented_login(args, env, as_owner)
    try:
        return await asyncio.to_thread(_zygote.run, argv, env, timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"headend {' '.join(argv)} still ran after {timeout:g} s") from None


def headend_in_process(*args: str, env: Mapping[str, str] | None = None, as_owner: bool = False) -> CliResult:
    """``headend ARGS`` through ``headend.cli.main`` in this process, output captured; with ``env``
    the environment is exactly ``env`` for the run. An exception escaping ``main`` (what a user would
    see as a traceback) is kept in ``stderr`` with exit code -1."""
    out, err = io.StringIO(), io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    args_given, env = as_documented_login(args, env, as_owner)
    sys.argv = ["headend", *args_given]
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    except Exception:  # what a user would see as a traceback
        err.write(traceback.format_exc())
        code = -1
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    status = 0 if code is None else code if isinstance(code, int) else 1
    return CliResult(status, out.getvalue(), err.getvalue())


def headend_prompted(*args: str, input: str, as_owner: bool = False) -> CliResult:
    """``headend ARGS`` in this process answering its prompts (hidden ones too) with ``input`` lines;
    stdout and stderr come out mixed in ``stdout``, as a terminal shows them."""
    argv, env = as_documented_login(args, None, as_owner)
    result = CliRunner().invoke(app, argv, input=input, env=env)
    return CliResult(result.exit_code, result.output, "")
