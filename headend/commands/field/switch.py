"""``headend switch``: one meter's relay, confirmed by a read-back; with a database a persisted,
audited command run by the signed-in operator."""

from __future__ import annotations

import os
from typing import Annotated, Any

import asyncpg
import typer

from headend.commands.auth import login
from headend.commands.common import Dsn, target_dsn
from headend.commands.field.shared import (
    Address,
    DialIn,
    FieldError,
    Json,
    MeterNumber,
    Model,
    Port,
    Protocol,
    Secrets,
    Trace,
    Unit,
    Url,
    Via,
    check_write_target,
    field_table,
    open_driver,
    print_result,
    recorded_dial_in,
    run_field,
)
from headend.commands.listen import Heartbeat, Listen, Wait
from headend.control.field_switch import field_switch
from headend.operators import OperatorError, check_operator_id


def switch_command(
    url: Url,
    action: Annotated[str, typer.Argument(help="off, on or close-allowed")],
    operator: Annotated[
        str, typer.Option("--operator", help="Your operator id (工号, 1-8 digits; the meter records it).")
    ],
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    meter: Annotated[
        str | None, typer.Option("--meter", help="Inventory name of the meter (default: its address/unit).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (audited; needed with a database).")
    ] = None,
    dsn: Dsn = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="No database: switch without a command record or audit.")
    ] = False,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    meter_number: MeterNumber = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the command; send nothing.")] = False,
    as_json: Json = False,
    trace: Trace = False,
    port: Port = None,
) -> None:
    """Switch one meter's relay and confirm it by reading the state back.

    The switch is a persisted command under the same safety gates and audit as the daemon's, run by an
    authenticated operator, in the database every command uses (--dsn, else $HEADEND_DSN, else the
    embedded server); --no-record switches without one. Wildcard, broadcast and malformed addresses
    are always refused."""
    action = action.replace("-", "_")
    via = Via(port)
    recorded = not (no_record or dry_run)
    dial_in = DialIn(listen, wait, heartbeat, meter_number)
    try:
        if action not in ("off", "on", "close_allowed"):
            raise FieldError("action must be off, on or close-allowed")
        operator = check_operator_id(operator)
        check_write_target(protocol, address, unit)
        if no_record and (dsn or os.environ.get("HEADEND_DSN")):
            raise FieldError(
                "--no-record: a database is configured, so the switch is recorded; drop the flag"
            )
        if recorded and not (reason or "").strip():
            raise FieldError(
                "--reason is required: it is recorded with the command"
                " (--no-record switches without a command record)"
            )
    except (FieldError, OperatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if recorded:
        database = target_dsn(dsn)  # --dsn, else $HEADEND_DSN, else the embedded server
        _recorded_switch(
            url,
            action,
            operator,
            protocol,
            address,
            unit,
            model,
            secrets,
            meter,
            reason,
            database,
            dial_in,
            via,
            as_json=as_json,
            trace=trace,
        )
        return

    async def work() -> dict[str, Any]:
        channel, driver = await open_driver(
            url, protocol, address, unit, model, secrets, dial_in, via, writes=True, trace=trace
        )
        try:
            if dry_run:
                if protocol == "modbus":
                    return {
                        "status": "dry-run",
                        "action": action,
                        "unit": driver.unit_id,
                        "operator": operator,
                        "sent": False,
                    }
                if driver.credentials is None:
                    raise FieldError(f"no password configured for meter {driver.address}")
                return {
                    "status": "dry-run",
                    "action": action,
                    "address": driver.address,
                    "operator": operator,
                    "password_level": driver.credentials.level,
                    "sent": False,
                }
            return (await driver.switch(action, operator=operator)).to_json()
        finally:
            await channel.close()  # also on a dry run: a dtu:// --listen channel stops its listener

    result = run_field(work, protocol)
    print_result(result, as_json, field_table(f"switch {action}", result))
    if result["status"] not in ("confirmed", "dry-run"):
        raise typer.Exit(code=1)


def _recorded_switch(
    url: str,
    action: str,
    operator: str,
    protocol: str,
    address: str | None,
    unit: int | None,
    model: str | None,
    secrets: str | None,
    meter: str | None,
    reason: str | None,
    database: str,
    dial_in: DialIn,
    via: Via,
    *,
    as_json: bool,
    trace: bool,
) -> None:
    """The switch as a persisted, audited command run by the signed-in operator (field_switch)."""
    me = login(operator)
    meter_ref = meter or (str(unit) if protocol == "modbus" else str(address))

    async def work() -> dict[str, Any]:
        try:
            conn = await asyncpg.connect(database)
        except (OSError, asyncpg.PostgresError) as exc:
            raise FieldError(f"database: {exc}") from None
        try:
            await me.sign_in(conn, "operator")
            checked = await recorded_dial_in(conn, dial_in, meter_ref)
            channel, driver = await open_driver(
                url, protocol, address, unit, model, secrets, checked, via, writes=True, trace=trace
            )
            try:
                outcome = await field_switch(
                    conn, meter_ref, action, operator=me.operator_id, reason=str(reason), driver=driver
                )
            finally:
                await channel.close()
        except asyncpg.PostgresError as exc:
            raise FieldError(str(exc)) from None
        finally:
            await conn.close()
        return {
            "command": outcome.command_id,
            "state": outcome.state,
            "error": outcome.last_error,
            "evidence": outcome.evidence,
        }

    result = run_field(work, protocol)
    print_result(result, as_json, field_table(f"switch {action}: command {result['command']}", result))
    if result["state"] != "confirmed":
        command = result["command"]
        typer.echo(f"command {command} is {result['state']}: see `headend commands show {command}`", err=True)
        raise typer.Exit(code=1)
