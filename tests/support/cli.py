"""Running ``headend`` the way a user does, in one place.

- :func:`headend`: a real process (``python -m headend.cli``), blocking; for tests without a
  simulator in their own event loop.
- :func:`headend_async`: the same process awaited, while the test's loop keeps serving its
  simulated buses, concentrators or listeners.
- :func:`spawn` / :func:`finish` / :func:`stop`: a long-running command (``sim``, ``listen``) in the
  test's event loop; :func:`start`: the daemon (``run``) as a ``subprocess.Popen``.
- :func:`headend_in_process`: ``headend.cli.main`` in this process, for the many short refusal cases
  of ``tests/inputs`` (a traceback escaping ``main`` is kept in ``stderr``); :func:`headend_prompted`:
  the same with typed answers to hidden prompts (typer's test runner stands in for the terminal).

Every runner returns a :class:`CliResult` (``returncode, stdout, stderr``; unpacks as a tuple).
``env`` replaces the process environment when given (e.g. ``operator_env()``); ``cli_env`` builds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from typer.testing import CliRunner

from headend.cli import app, main

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


def headend(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, stdin_closed: bool = False
) -> CliResult:
    """``headend ARGS`` as a process; waits for it (``stdin_closed``: stdin is /dev/null)."""
    done = subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL if stdin_closed else None,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def start(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``headend ARGS`` (a daemon: ``run``) started as a blocking-API process: stderr piped as text,
    stdout discarded; not waited for."""
    return subprocess.Popen(
        [*COMMAND, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
    )


async def spawn(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """``headend ARGS`` started as a process, stdout and stderr piped unless said otherwise (None
    inherits the test's, ``asyncio.subprocess.DEVNULL`` discards); not waited for."""
    return await asyncio.create_subprocess_exec(
        *COMMAND, *args, stdout=stdout, stderr=stderr, env=None if env is None else dict(env)
    )


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


async def headend_async(*args: str, env: Mapping[str, str] | None = None, timeout: float = 90) -> CliResult:
    """``headend ARGS`` as a process, awaited without blocking this event loop."""
    return await finish(await spawn(*args, env=env), timeout)


def headend_in_process(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """``headend ARGS`` through ``headend.cli.main`` in this process, output captured; with ``env``
    the environment is exactly ``env`` for the run. An exception escaping ``main`` (what a user would
    see as a traceback) is kept in ``stderr`` with exit code -1."""
    out, err = io.StringIO(), io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = ["headend", *args]
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


def headend_prompted(*args: str, input: str) -> CliResult:
    """``headend ARGS`` in this process answering its prompts (hidden ones too) with ``input`` lines;
    stdout and stderr come out mixed in ``stdout``, as a terminal shows them."""
    result = CliRunner().invoke(app, list(args), input=input)
    return CliResult(result.exit_code, result.output, "")
