"""``headend demo``: simulators, an embedded database, the daemon, a live dashboard and the fee-control story.

Everything runs in this process except PostgreSQL: the simulated buses listen on 127.0.0.1 and on
ptys, the engine reaches them through its normal channels and drivers exactly as it reaches field
equipment, and the story goes through the billing and fee-control modules. SIGINT/SIGTERM (Ctrl-C)
or the end of ``duration_s`` stop everything; the daemon finishes the exchange in flight and flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.live import Live

from headend.config import HeadendConfig, validate_config
from headend.daemon import build_daemon
from headend.demo.console import start_console
from headend.demo.dashboard import render, status_line
from headend.demo.fleet import CONCENTRATOR_ADDRESS, STORY_ACCOUNT, DemoFleet, backlog_s, demo_buses
from headend.demo.snapshot import take_snapshot
from headend.demo.story import FeeControlStory, create_story_account
from headend.demo.summary import summarise
from headend.engine.logs import JsonFormatter
from headend.inventory import import_inventory
from headend.store.embedded import EmbeddedPostgres
from headend.store.migrate import migrate
from headend.transport import DialinHub

log = logging.getLogger("headend.demo")
REFRESH_S = 2.0
STATUS_EVERY_S = 10.0
SECRETS_FILE = "secrets.toml"  # in the demo's work directory


@dataclass(frozen=True)
class DemoOptions:
    """What ``headend demo`` was asked for."""

    meters: int = 32
    duration_s: float | None = None  # None: until Ctrl-C
    interval_s: int = 60
    seed: int = 7
    data_dir: Path | None = None  # None: a temporary directory, removed at the end
    metrics_port: int = 0
    dashboard: bool = True


def demo_config(options: DemoOptions, workdir: Path) -> HeadendConfig:
    """The daemon's configuration for the demo: short intervals, quick backfill and clock checks; the
    spool and the meter secrets in ``workdir``."""
    i = options.interval_s
    plan = ["energy_import_kwh", "energy_export_kwh", "voltage_a_v", "current_a_a", "power_kw"]
    return validate_config(
        {
            "database": {"spool_dir": str(workdir / "spool")},
            "secrets": {"file": str(workdir / SECRETS_FILE)},
            "polling": {"interval": f"{i}s", "offset": "1s", "inventory_reload": "1h"},
            "read_plans": {"default": {"quantities": plan, "gap_quantity": "energy_import_kwh"}},
            # replies come from simulators in this process, within milliseconds of the line time: a
            # timeout of at least 3 s only ever fires on a planned fault, never on a loaded machine
            "timeouts": {"initial": "3s", "minimum": "3s", "maximum": "6s"},
            "health": {"quarantine_after": 3, "backoff": f"{i}s", "backoff_max": f"{4 * i}s"},
            "backfill": {
                "enabled": True,
                "lookback": f"{backlog_s(i) + 5 * i}s",
                "retry_every": f"{i}s",
                "max_intervals_per_meter": 20,
            },
            # guards of seconds, not a minute: the fast clock is corrected at any hour the demo runs
            "clock": {
                "enabled": True,
                "check_every": f"{2 * i}s",
                "max_drift": "30s",
                "boundary_guard": "5s",
                "midnight_guard": "5s",
            },
            "events": {"enabled": True, "collect_every": f"{4 * i}s"},
            "metrics": {"port": options.metrics_port},
            "listen": {  # the simulated cellular DTU dials in to the first, the concentrator to the second
                "listeners": [
                    {"address": "127.0.0.1:0", "heartbeat": "HB", "silent_timeout": "30s"},
                    {"address": "127.0.0.1:0", "kind": "gdw1376", "silent_timeout": "30s"},
                ]
            },
            # the story must be able to play at any hour of any day: no quiet windows in the demo
            "safety": {
                "timezone": "Asia/Shanghai",
                "night_start": "00:00",
                "night_end": "00:00",
                "no_weekends": False,
            },
            # the story disconnects as soon as the balance is negative: no notice, no minimum
            "billing": {"notice_period": 0, "min_arrears": 0},
        },
        "demo",
    )


class WarningBuffer(logging.Handler):
    """Keeps the latest warnings and errors for the dashboard."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.lines: deque[str] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{datetime.fromtimestamp(record.created, UTC):%H:%M:%S} {record.getMessage()}")


@contextlib.contextmanager
def demo_logging(log_file: Path, buffer: WarningBuffer) -> Iterator[None]:
    """Send every log record to ``log_file`` (JSON lines) and warnings to ``buffer``; restore afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler, buffer]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        yield
    finally:
        handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)


def _workdir(options: DemoOptions) -> Path:
    if options.data_dir is None:
        path = Path(tempfile.mkdtemp(prefix="headend-demo-"))
    else:
        path = options.data_dir.absolute()
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"--data-dir {path} is not empty; give a new or empty directory")
        path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the embedded server may run as another user (when started as root)
    return path


def _write_secrets(workdir: Path, password: str) -> Path:
    path = workdir / SECRETS_FILE
    path.touch(mode=0o600)
    path.write_text(f'[default]\npassword_level = 2\npassword = "{password}"\n', encoding="utf-8")
    return path


async def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the demo until ``duration_s`` or a signal; returns the summary (see ``summarise``)."""

    workdir = _workdir(options)
    keep = options.data_dir is not None
    database = EmbeddedPostgres(workdir / "postgres")
    warnings = WarningBuffer()
    try:
        with demo_logging(workdir / "headend.log", warnings):
            console.print(
                f"[bold]headend demo[/]: starting the embedded database in {workdir}", soft_wrap=True
            )
            dsn = await asyncio.to_thread(database.start)
            try:
                return await _run(options, console, dsn, workdir, warnings)
            finally:
                await asyncio.to_thread(database.stop)
    finally:
        if keep:
            console.print(f"database, log and secrets kept in {workdir}", soft_wrap=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    options: DemoOptions, console: Console, dsn: str, workdir: Path, warnings: WarningBuffer
) -> dict[str, Any]:

    await migrate(dsn)
    password = f"{secrets.randbelow(10**6):06d}"  # this run's meter password, known to meters and head-end
    buses = demo_buses(options.meters, options.interval_s, options.seed, password)
    fleet = DemoFleet(buses, options.interval_s)
    await fleet.start()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await create_story_account(conn, STORY_ACCOUNT)
            backlog = timedelta(seconds=backlog_s(options.interval_s))  # meters already in the field
            await import_inventory(conn, fleet.inventory(datetime.now(UTC) - backlog), "demo")
        finally:
            await conn.close()
        _write_secrets(workdir, password)
        daemon = build_daemon(demo_config(options, workdir), dsn)
        engine, front = daemon.engine, daemon.front
        assert front is not None  # demo_config listens: the cellular DTU and the concentrator dial in
        since = datetime.now(UTC)
        await daemon.start()
        await fleet.dial_in("127.0.0.1", front.listeners[0].port, front.listeners[1].port)
        devices = [("dtu", bus.dial_in) for bus in buses if bus.dial_in]
        await _until_online(front.hub, [*devices, ("gdw1376", CONCENTRATOR_ADDRESS)])
        web = await start_console(dsn)
        console.print(
            f"web console: {web.url} (sign in as operator {web.operator_id}, password {web.password};"
            " this run only)",
            soft_wrap=True,
            highlight=False,
        )
        started = time.monotonic()
        story = FeeControlStory(engine, STORY_ACCOUNT, pay_after_s=max(10.0, options.interval_s / 2))
        try:
            await _show(options, console, engine, story, fleet, since, started, warnings, workdir)
        finally:
            await web.stop()
            await daemon.stop()
        conn = await asyncpg.connect(dsn)
        try:
            final = await take_snapshot(conn, None, since=since)
        finally:
            await conn.close()
        return summarise(final, story.state, fleet, options.interval_s, time.monotonic() - started)
    finally:
        await fleet.stop()


async def _until_online(hub: DialinHub, devices: list[tuple[str, str]], timeout_s: float = 15.0) -> None:
    """Wait (bounded) for the demo's DTUs and concentrator to dial in; a late one is just offline
    for a while."""
    deadline = time.monotonic() + timeout_s
    while not all(hub.online(device) for device in devices) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _show(
    options: DemoOptions,
    console: Console,
    engine: Any,
    story: FeeControlStory,
    fleet: DemoFleet,
    since: datetime,
    started: float,
    warnings: WarningBuffer,
    workdir: Path,
) -> None:
    """Advance the story and refresh the dashboard until the duration ends or a signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = None if options.duration_s is None else started + options.duration_s
    until = "Ctrl-C" if deadline is None else f"{options.duration_s:.0f} s or Ctrl-C"
    channels = ", ".join(
        f"{bus.channel} ({bus.protocol}, {len(fleet.running[bus.channel].meters)})" for bus in fleet.buses
    )
    console.print(
        f"daemon running, interval {options.interval_s} s, until {until}; buses: {channels}", soft_wrap=True
    )
    live = Live(console=console, refresh_per_second=4, transient=False) if options.dashboard else None
    last_status = 0.0

    async def show_dashboard(live: Live) -> None:
        async with engine.pool.acquire() as conn:
            snap = await take_snapshot(conn, engine, since=since)
        header = (
            f"headend demo: t+{time.monotonic() - started:.0f}s, interval {options.interval_s}s, "
            f"until {until}.  Daemon log: {workdir / 'headend.log'}"
        )
        live.update(render(header, snap, story.state, list(warnings.lines)))

    try:
        if live is not None:
            live.start()
        while not stop.is_set():
            try:
                await story.step()
            except Exception as exc:  # the story must not stop the daemon; the log has the details
                log.exception("demo story step failed")
                warnings.lines.append(f"story step failed: {exc}")
            elapsed = time.monotonic() - started
            if live is not None:
                await show_dashboard(live)
            elif elapsed - last_status >= STATUS_EVERY_S:
                last_status = elapsed
                async with engine.pool.acquire() as conn:
                    snap = await take_snapshot(conn, engine, since=since)
                console.print(status_line(elapsed, snap, story.state), highlight=False, soft_wrap=True)
            if deadline is not None and time.monotonic() >= deadline:
                # end on a whole cycle: the one in flight finishes (a signal cuts it short)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(options.interval_s):
                        await engine.wait_cycles()
                if live is not None:
                    await show_dashboard(live)  # the screen left behind shows the finished cycle
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_S):
                    await stop.wait()
    finally:
        if live is not None:
            live.stop()
            console.print()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print("stopping: finishing the exchanges in flight and flushing the writer")
