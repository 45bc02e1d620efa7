"""Helpers for tests that run ``headend run`` as real processes: JSON log tails, /metrics samples,
and a counting TCP relay in front of a simulated bus (which daemon opened which bus connection)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import cli
from tests.support.cli import cli_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until


class Daemon:
    """One ``headend run`` process; its JSON log lines are collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process, metrics_port: int) -> None:
        self.proc = proc
        self.metrics_port = metrics_port
        self.records: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path, state_dir: Path, metrics_port: int) -> Daemon:
        env = cli_env(HEADEND_STATE_DIR=str(state_dir))
        proc = await cli.spawn("run", "--config", str(config), env=env, stdout=asyncio.subprocess.DEVNULL)
        return cls(proc, metrics_port)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                self.other_lines.append(line)

    def logged(self, message: str) -> list[dict[str, Any]]:
        """Records whose message starts with ``message``."""
        return [r for r in self.records if str(r.get("msg", "")).startswith(message)]

    async def wait_logged(self, message: str, timeout: float = 60.0, count: int = 1) -> dict[str, Any]:
        async def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}): {self.other_lines[-5:]}")
            return len(self.logged(message)) >= count

        try:
            await wait_until(seen, timeout, f"log line {message!r}", interval=0.1)
        except AssertionError as exc:
            recent = [r.get("msg") for r in self.records[-8:]] + self.other_lines[-3:]
            raise AssertionError(f"{exc}; the daemon's last lines: {recent}") from None
        return self.logged(message)[count - 1]

    async def metric(self, name: str, labels: str = "") -> float:
        """The sum of a metric's samples on this daemon's /metrics whose labels contain ``labels``
        (e.g. ``kind="events"``; 0 when it has none)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        total = 0.0
        for line in body.splitlines():
            if (line.startswith(name + " ") or line.startswith(name + "{")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        self.kill()
        await self.proc.wait()
        await self._reader


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The process holding the 127.0.0.1 TCP socket ``local`` -> ``remote`` (from /proc: the socket's
    inode in /proc/net/tcp, then the process with that inode among its descriptors)."""

    def hex_of(address: tuple[str, int]) -> str:
        return f"0100007F:{address[1]:04X}"

    inode = None
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == hex_of(local) and fields[2] == hex_of(remote):
                inode = fields[9]
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


class CountingRelay:
    """A TCP relay in front of a bus: every connection a daemon opens to the bus is recorded, with the
    process that opened it (``peers``) and the request bytes each process sent (``sent``)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.opened = 0
        self.open = 0
        self.peers: list[int | None] = []
        self.sent: dict[int | None, int] = {}
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"tcp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self.open += 1
        peer = writer.get_extra_info("peername")[:2]
        here = writer.get_extra_info("sockname")[:2]
        pid = await asyncio.to_thread(socket_owner, peer, here)
        self.peers.append(pid)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, self.sent, pid), self._pipe(up_reader, writer))
        finally:
            self.open -= 1
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sent: dict[int | None, int] | None = None,
        requests_of: int | None = None,
    ) -> None:
        """Copy ``reader`` to ``writer``; with ``sent``, count the bytes under ``requests_of``."""
        try:
            while data := await reader.read(4096):
                if sent is not None:
                    sent[requests_of] = sent.get(requests_of, 0) + len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class SwitchableDatabase:
    """A TCP front for a PostgreSQL unix socket that can go away (connections refused, open ones cut)
    and come back on the same port: a database that is unreachable, then reachable."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def down(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                CountingRelay._pipe(reader, up_writer), CountingRelay._pipe(up_reader, writer)
            )
        finally:
            self._writers -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()


eventually = wait_until  # the former name of tests.support.waiting.wait_until
