"""``headend run``: the polling daemon (SIGTERM/SIGINT: finish the exchange in flight, flush, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from headend.config import ConfigError, HeadendConfig, load_config
from headend.store.dsn import redact, resolve_dsn

log = logging.getLogger("headend.run")


async def run_daemon(config: HeadendConfig) -> None:
    """Run the daemon (active, or a standby while another daemon is) until SIGTERM or SIGINT."""

    from headend.supervisor import supervise  # the daemon loads when it runs, not for every command

    dsn = resolve_dsn(config.database.dsn or None)
    log.info("database", extra={"dsn": redact(dsn)})
    stop = asyncio.Event()

    def shut_down() -> None:
        log.info("shutting down")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shut_down)
    await supervise(config, dsn, stop)


def run_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file (default: $HEADEND_CONFIG)")
    ] = None,
) -> None:
    """Run the polling daemon: scheduled reads, backfill, clocks, events, metrics."""
    from headend.engine.logs import configure_logging
    from headend.preflight import StartupError, check_startup, secrets_problem

    from_env = config is None and bool(os.environ.get("HEADEND_CONFIG"))
    path = config or (Path(os.environ["HEADEND_CONFIG"]) if from_env else None)
    try:
        settings = load_config(path)
        check_startup(settings)
    except ConfigError as exc:
        typer.echo(f"HEADEND_CONFIG: {exc}" if from_env else str(exc), err=True)
        raise typer.Exit(2) from None
    except StartupError as exc:
        where = f"HEADEND_CONFIG: {path}: " if from_env else f"{path}: " if path else ""
        typer.echo(f"{where}{exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.logging.level, settings.logging.format)
    problem = secrets_problem(settings)
    if problem is not None:
        log.warning(
            f"meter secrets unusable ({problem}): meters are still read, relay and clock writes are refused"
        )
    asyncio.run(run_daemon(settings))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
