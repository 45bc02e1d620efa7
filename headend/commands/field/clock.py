"""``headend clock``: read (``--sync``: correct under the daemon's clock policy) a meter's clock or a
concentrator's own clock."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer

from headend.commands.auth import Login, login
from headend.commands.common import ConfigPath, chosen_config
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
    meter_secrets,
    open_driver,
    print_result,
    run_field,
)
from headend.commands.listen import Heartbeat, Listen, Wait, open_field_channel
from headend.drivers.gdw1376_terminal import TerminalClock, read_terminal_clock
from headend.engine.clock import ClockPolicy, check_clock
from headend.operators import OperatorError, check_operator_id
from headend.store.audit import audit
from headend.transport import (
    CONCENTRATOR_SCHEMES,
    ConcentratorLink,
    parse_channel_url,
)


def clock_command(
    url: Url,
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    meter_number: MeterNumber = None,
    sync: Annotated[bool, typer.Option("--sync", help="Correct the clock if it is off.")] = False,
    operator: Annotated[
        str | None, typer.Option("--operator", help="With --sync: your operator id (工号), signed in.")
    ] = None,
    dsn: Annotated[
        str | None, typer.Option("--dsn", help="Database that audits a --sync (default: $HEADEND_DSN).")
    ] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="No database: --sync without an audit record.")
    ] = False,
    config: ConfigPath = None,
    as_json: Json = False,
    trace: Trace = False,
    port: Port = None,
) -> None:
    """Read (and with --sync correct) the meter clock, or a concentrator's own clock (no --address).

    --sync writes the clock under the daemon's clock policy ([clock] of --config or $HEADEND_CONFIG, else
    the defaults) and names an operator; with a database (--dsn or $HEADEND_DSN) the operator signs in
    and the correction is audited; without one, --no-record is required."""
    via = Via(port)
    dial_in = DialIn(listen, wait, heartbeat, meter_number)
    database = (dsn or os.environ.get("HEADEND_DSN")) if sync else None
    try:
        if sync:
            _check_clock_write(operator, database, no_record)
    except (FieldError, OperatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    policy = ClockPolicy.from_config(chosen_config(config).clock) if sync else None
    me = login(operator) if database else None

    async def sync_clock() -> dict[str, Any]:
        if address is None and parse_channel_url(url).scheme in CONCENTRATOR_SCHEMES:
            return await _terminal_clock(url, secrets, dial_in, policy)
        if policy is not None:
            check_write_target(protocol, address, unit)
        channel, driver = await open_driver(
            url, protocol, address, unit, model, secrets, dial_in, via, writes=sync, trace=trace
        )
        try:
            if policy is not None:
                result = await check_clock(driver, policy)
                return {
                    "meter_time": result.meter_time,
                    "drift_s": result.drift_before,
                    "action": result.action,
                    "reason": result.reason,
                    "drift_after_s": result.drift_after,
                }
            meter_time = await driver.read_clock()
            return {"meter_time": meter_time, "drift_s": (meter_time - datetime.now(UTC)).total_seconds()}
        finally:
            await channel.close()

    async def work() -> dict[str, Any]:
        if me is None or database is None:
            return await sync_clock()
        if address is None and unit is None:  # a concentrator's own clock
            entity, target = "concentrator", parse_channel_url(url).terminal or url
        else:
            entity, target = "meter", address if address is not None else str(unit)
        return await _audited_clock_sync(database, me, (entity, target), url, sync_clock)

    result = run_field(work, protocol)
    print_result(result, as_json, field_table("meter clock" if address else "clock", result))


def _check_clock_write(operator: str | None, database: str | None, no_record: bool) -> None:
    """A clock write names its operator and is audited, or is explicitly unrecorded."""
    if operator is None:
        raise FieldError("--sync writes the clock: --operator is required")
    check_operator_id(operator)
    if database and no_record:
        raise FieldError(
            "--no-record: a database is configured, so the clock write is audited; drop the flag"
        )
    if not database and not no_record:
        raise FieldError(
            "no database configured (--dsn or $HEADEND_DSN) to audit the clock write;"
            " give --no-record to write it without an audit record"
        )


async def _audited_clock_sync(
    database: str,
    me: Login,
    target: tuple[str, str],
    url: str,
    sync_clock: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Sign the operator in, correct the clock, and audit what was written (nothing when none was)
    against ``target`` (entity, id)."""
    try:
        conn = await asyncpg.connect(database)
    except (OSError, asyncpg.PostgresError) as exc:
        raise FieldError(f"database: {exc}") from None
    try:
        operator = await me.sign_in(conn, "operator")
        result = await sync_clock()
        if result.get("action") not in ("none", "skipped"):
            details = {"channel": url, **{k: v for k, v in result.items() if k != "reason"}}
            entity, entity_id = target
            await audit(conn, operator.id, "clock_set", entity, entity_id, str(result["reason"]), details)
        return result
    except asyncpg.PostgresError as exc:
        raise FieldError(f"database: {exc}") from None
    finally:
        await conn.close()


async def _terminal_clock(
    url: str, secrets: str | None, dial_in: DialIn, policy: ClockPolicy | None
) -> dict[str, Any]:
    """A concentrator's clock: AFN 0C F2, and with a ``policy`` (a sync) AFN 05 F31 under it."""
    pw = meter_secrets(secrets, policy is not None).concentrator_pw(parse_channel_url(url).terminal)
    link = await open_field_channel(url, dial_in.listen, dial_in.wait_s)
    assert isinstance(link, ConcentratorLink)
    link.set_pw(pw)
    try:
        if policy is None:
            clock = await read_terminal_clock(link)
            return {
                "concentrator": link.key,
                "clock": clock,
                "drift_s": (clock - datetime.now(UTC)).total_seconds(),
            }
        result = await check_clock(TerminalClock(link), policy)
        return {
            "concentrator": link.key,
            "clock": result.meter_time,
            "drift_s": result.drift_before,
            "action": result.action,
            "reason": result.reason,
            "drift_after_s": result.drift_after,
        }
    finally:
        await link.close()
