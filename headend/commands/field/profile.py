"""``headend profile``: interval records from a meter's load profile (or daily freeze)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from headend.commands.field.shared import (
    Address,
    DialIn,
    FieldError,
    Json,
    Model,
    Protocol,
    Secrets,
    Trace,
    Unit,
    Url,
    open_driver,
    print_result,
    run_field,
)
from headend.commands.listen import Heartbeat, Listen, Wait


def profile_command(
    url: Url,
    start: Annotated[datetime, typer.Option("--from", help="Start (UTC), e.g. 2026-11-22T00:00")],
    end: Annotated[datetime, typer.Option("--to", help="End (UTC).")],
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
    trace: Trace = False,
) -> None:
    """Read interval records from the meter's load profile (or daily freeze)."""

    async def work() -> dict[str, Any]:
        if end <= start:
            raise FieldError(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
        channel, driver = await open_driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat), trace=trace
        )
        try:
            records = await driver.read_profile(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
        finally:
            await channel.close()
        return {
            "address": driver.address,
            "records": [{"ts": r.ts, "source": r.source, **r.values} for r in records],
        }

    result = run_field(work, protocol)
    table = Table(title=f"profile of {result['address']}")
    for column in ("ts", "source", "energy_import_kwh"):
        table.add_column(column)
    for record in result["records"]:
        table.add_row(record["ts"].isoformat(), record["source"], str(record.get("energy_import_kwh")))
    print_result(result, as_json, table)
