"""``headend read``: quantities or raw data identifiers from one meter."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from headend.commands.field.shared import (
    Address,
    DialIn,
    Json,
    Model,
    Pn,
    Port,
    Protocol,
    Secrets,
    Trace,
    Unit,
    Url,
    Via,
    open_driver,
    print_result,
    run_field,
)
from headend.commands.listen import Heartbeat, Listen, Wait
from headend.drivers import DriverError
from protocols.dlt645.frame import jsonable


def read_command(
    url: Url,
    items: Annotated[
        list[str] | None, typer.Argument(help="Quantities (energy_import_kwh ...) or DIs.")
    ] = None,
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
    port: Port = None,
    pn: Pn = None,
) -> None:
    """Read quantities or raw data identifiers from one meter."""
    via = Via(port, pn)

    async def work() -> dict[str, Any]:
        channel, driver = await open_driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat), via, trace=trace
        )
        try:
            names = items or list(driver.model.points if protocol == "modbus" else driver.plan)
            values: dict[str, Any] = {}
            unsupported: dict[str, str] = {}
            for name in names:
                is_di = protocol != "modbus" and all(c in "0123456789abcdefABCDEF" for c in name)
                if not is_di:
                    got = await driver.read([name])
                    values.update(got)
                    unsupported.update(driver.unsupported)
                else:
                    try:
                        values[name.upper()] = await driver.read_di(name.upper())
                    except DriverError as exc:
                        unsupported[name.upper()] = str(exc)
            return {
                "address": driver.address,
                "protocol": protocol,
                "values": values,
                "unsupported": unsupported,
            }
        finally:
            await channel.close()

    result = run_field(work, protocol)
    table = Table(title=f"meter {result['address']}")
    table.add_column("item")
    table.add_column("value")
    for name, value in result["values"].items():
        if name == "relay":  # stored as 1.0 (closed) / 0.0 (open): said in words
            shown = "closed" if value else "open"
        else:
            shown = json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value)
        table.add_row(name, shown)
    for name, reason in result["unsupported"].items():
        table.add_row(name, f"[red]{reason}[/red]")
    print_result(result, as_json, table)
