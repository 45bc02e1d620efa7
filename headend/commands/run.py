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
    from headend.daemon import build_daemon
    from headend.store.dsn import redact, resolve_dsn
    from headend.store.migrate import migrate

    dsn = resolve_dsn(config.database.dsn or None)
    log.info("database", extra={"dsn": redact(dsn)})
    await migrate(dsn)
    daemon = build_daemon(config, dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.start()
    await stop.wait()
    log.info("shutting down")
    await daemon.stop()


def run_command(
    config: Path = typer.Option(None, "--config", "-c", help="Config file (default: $HEADEND_CONFIG)"),
) -> None:
    """Run the polling daemon: scheduled reads, backfill, clocks, events, metrics."""
    from_env = config is None and bool(os.environ.get("HEADEND_CONFIG"))
    path = config or (Path(os.environ["HEADEND_CONFIG"]) if from_env else None)
    try:
        settings = load_config(path)
    except ConfigError as exc:
        typer.echo(f"HEADEND_CONFIG: {exc}" if from_env else str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.logging.level, settings.logging.format)
    asyncio.run(run_daemon(settings))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
