"""``headend demo``: the whole system on simulated meters and an embedded database, in one command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from headend.store.embedded import EmbeddedPostgresError


def demo_command(
    meters: Annotated[
        int, typer.Option(min=1, max=200, help="Meters on the DL/T 645-2007 bus (TCP serial server).")
    ] = 32,
    duration: Annotated[
        float | None, typer.Option(min=5, help="Stop after this many seconds (default: at Ctrl-C).")
    ] = None,
    interval: Annotated[int, typer.Option(min=5, max=900, help="Read interval of the daemon, seconds.")] = 60,
    json_summary: Annotated[
        Path | None, typer.Option("--json-summary", help="Write the closing figures to this JSON file.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the database, log and secrets in this new directory (default: temporary)."),
    ] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus /metrics on this port (0: off).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated meters and faults.")] = 7,
    dashboard: Annotated[
        bool | None,
        typer.Option("--dashboard/--no-dashboard", help="Live dashboard (default: when on a terminal)."),
    ] = None,
) -> None:
    """Run simulated buses, the daemon on an embedded database, a live dashboard and a fee-control story."""

    if interval > 0 and 86400 % interval:
        raise typer.BadParameter(f"--interval {interval} must divide a day (e.g. 10, 15, 20, 30, 60)")
    # the daemon, its engine, drivers and simulators load when the demo runs, not for every command
    from headend.demo.runner import DemoOptions, run_demo
    from headend.demo.summary import summary_text

    console = Console()
    options = DemoOptions(
        meters=meters,
        duration_s=duration,
        interval_s=interval,
        seed=seed,
        data_dir=data_dir,
        metrics_port=metrics_port,
        dashboard=console.is_terminal if dashboard is None else dashboard,
    )
    try:
        summary = asyncio.run(run_demo(options, console))
    except (ValueError, EmbeddedPostgresError) as exc:
        typer.echo(f"headend demo: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before the daemon was up: everything started has been stopped
        typer.echo("headend demo: interrupted during start-up", err=True)
        raise typer.Exit(130) from None
    console.print(summary_text(summary), highlight=False)
    if json_summary is not None:
        json_summary.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        console.print(f"summary written to {json_summary}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
