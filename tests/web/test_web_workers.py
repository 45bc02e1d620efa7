"""``headend web --workers 2``: two processes serve the one listening socket, and a session signed in
on one is good on the other (the console keeps nothing in a process). Each worker is made the only
one accepting by stopping the other (SIGSTOP: its share of the socket waits), so which one served a
request is known without asking it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from tests.support.operators import add_operators
from tests.support.postgres import run_sync
from tests.support.waiting import wait_until_sync
from tests.support.web import console_process, signed_in


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` that run Python's spawned-process entry (the workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry))
    return sorted(found)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """``pid`` does not run (nor accept connections) inside the block."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_two_workers_both_serve_and_share_sessions(pg_dsn: str, tmp_path: Path) -> None:
    async def seed() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await add_operators(conn, o1="viewer")
        finally:
            await conn.close()

    run_sync(seed)
    with console_process(pg_dsn, tmp_path, ("--workers", "2")) as (url, process):
        workers: list[int] = []

        def both_up() -> bool:
            workers[:] = _children(process.pid)
            return len(workers) == 2

        wait_until_sync(both_up, 30, "two worker processes")
        first, second = workers
        wait_until_sync(lambda: _answers_alone(url, first, second), 30, "the first worker to answer")
        wait_until_sync(lambda: _answers_alone(url, second, first), 30, "the second worker to answer")
        with stopped(second):
            client = signed_in(url, "1")  # on the first worker
        cookies = client.cookies
        client.close()
        with stopped(first), httpx.Client(base_url=url, cookies=cookies, timeout=10) as other:
            me = other.get("/api/me")  # a new connection: on the second worker
        assert me.status_code == 200 and me.json()["operator_id"] == "1", me.text[:300]
        assert _children(process.pid) == [first, second]  # neither was replaced meanwhile


def _answers_alone(url: str, serving: int, other: int) -> bool:
    """Whether ``serving`` answers a new connection while ``other`` is stopped."""
    with stopped(other):
        try:
            return httpx.get(url + "/signin", timeout=2).status_code == 200
        except httpx.TransportError:
            return False
