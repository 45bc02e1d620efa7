"""``headend run``: the polling daemon (SIGTERM/SIGINT: finish the exchange in flight, flush, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import typer

from headend.config import ConfigError, HeadendConfig, load_config
from headend.engine.logs import configure_logging

log = logging.getLogger("headend.run")


async def run_daemon(config: HeadendConfig) -> None:
    """Run the engine until SIGTERM or SIGINT, then shut down cleanly."""
    from headend.engine.engine import Engine
    from headend.engine.frontend import FrontEnd
    from headend.engine.ports import DriverPort
    from headend.metrics import EngineMetrics
    from headend.store.dsn import redact, resolve_dsn
    from headend.store.migrate import migrate
    from headend.store.writer import ReadingWriter

    dsn = resolve_dsn(config.database.dsn or None)
    log.info("database", extra={"dsn": redact(dsn)})
    await migrate(dsn)
    spool_dir = Path(config.database.spool_dir) if config.database.spool_dir else None
    writer = ReadingWriter(dsn, spool_dir=spool_dir, spool_max_bytes=config.database.spool_max_mb << 20)
    metrics = EngineMetrics()
    if config.metrics.port:
        metrics.serve(config.metrics.host, config.metrics.port)
    front = await FrontEnd(config.listen, dsn).start() if config.listen.listeners else None
    port = DriverPort(config.secrets.file or None, front.hub if front is not None else None)
    engine = Engine(config, dsn, writer, port, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    await stop.wait()
    log.info("shutting down")
    await engine.stop()
    if front is not None:
        await front.stop()


def run_command(
    config: Path = typer.Option(None, "--config", "-c", help="Config file (default: $HEADEND_CONFIG)"),
) -> None:
    """Run the polling daemon: scheduled reads, backfill, clocks, events, metrics."""
    path = config or (Path(os.environ["HEADEND_CONFIG"]) if os.environ.get("HEADEND_CONFIG") else None)
    try:
        settings = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.logging.level, settings.logging.format)
    asyncio.run(run_daemon(settings))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
