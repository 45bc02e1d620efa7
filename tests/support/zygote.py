"""A warm ``headend`` for the tests: a process that has imported the CLI and every command module once
and forks a child for each command a test runs.

Starting ``python -m headend.cli`` costs about 0.3 s of CPU in imports before the command does
anything, and the suite runs some six hundred commands. A child forked from this process is still a
process of its own: its argv, environment, working directory, stdin/stdout/stderr (the test's file
descriptors, passed over the socket) and exit code are the command's, and nothing it does reaches
the test's process. What differs from a fresh interpreter is only that the modules were imported
before the environment was set, so no module may read the environment when it is imported (none
does; the lazy-CLI and packaging tests still start real interpreters).

Protocol, over a Unix socket: the client sends one JSON line ``{"argv", "env", "cwd"}`` with three
file descriptors (stdin, stdout, stderr); the server answers ``"PID\\n"`` when the child runs and
``"STATUS\\n"`` when it has exited (a negative status: killed by that signal).

``python -m tests.support.zygote SOCKET`` serves until its stdin closes (its test worker is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import os
import selectors
import socket
import sys
import traceback
from pathlib import Path


def _preload() -> None:
    """Import the CLI, every command module and what the commands import when they run."""
    from headend.cli import HeadendCommands

    for module in sorted(set(HeadendCommands.command_modules.values())):
        importlib.import_module(f"headend.commands.{module}")
    for module in ("headend.daemon", "headend.demo.runner", "headend.web.app", "simulators"):
        importlib.import_module(module)


def _run_child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the command's process and run ``headend.cli.main``; never returns."""
    code = 1
    try:  # the signal dispositions are the interpreter's own: the warm process sets none
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.chdir(str(request["cwd"]))
        argv = request["argv"]
        assert isinstance(argv, list)
        from headend import cli

        sys.argv = [cli.__file__, *map(str, argv)]  # as ``python -m headend.cli`` has them
        sys.modules["__main__"].__package__ = "headend"
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:  # what a user would see as a traceback
            traceback.print_exc()
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("request cut short")
        data += more
    request = json.loads(data)
    assert isinstance(request, dict) and len(fds) == 3
    return request, fds


def serve(path: Path) -> None:
    """Accept requests on ``path`` until stdin closes; fork a child for each."""
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    binding = path.with_name(path.name + ".binding")
    listener.bind(str(binding))
    listener.listen(64)
    binding.rename(path)  # the path appears only once connections are accepted
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's connection)
    while True:
        for key, _ in selector.select():
            if key.data == "stdin":
                if not sys.stdin.buffer.read1(4096):
                    return
            elif key.data == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (ConnectionError, ValueError, AssertionError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for pidfd, (_, client) in waiting.items():
                        os.close(pidfd)
                        client.close()
                    listener.close()
                    conn.close()
                    _run_child(request, fds)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pidfd = key.fd
                pid, conn = waiting.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):  # the test may have given up on it
                    conn.sendall(f"{code}\n".encode())
                conn.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
