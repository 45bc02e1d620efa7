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
from headend.commands.common import ConfigPath, Dsn, chosen_config, target_dsn
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
    recorded_dial_in,
    run_field,
)
from headend.commands.field.trace import attach
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
    dsn: Dsn = None,
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
    the defaults) and names an operator, who signs in to the database every command uses (--dsn, else
    $HEADEND_DSN, else the embedded server) where the correction is audited; --no-record writes it
    without an audit record."""
    via = Via(port)
    dial_in = DialIn(listen, wait, heartbeat, meter_number)
    try:
        if sync:
            _check_clock_write(operator, bool(dsn or os.environ.get("HEADEND_DSN")), no_record)
    except (FieldError, OperatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    policy = ClockPolicy.from_config(chosen_config(config).clock) if sync else None
    database = target_dsn(dsn) if sync and not no_record else None  # the embedded server by default
    me = login(operator) if database else None

    async def sync_clock(checked: DialIn = dial_in) -> dict[str, Any]:
        if address is None and parse_channel_url(url).scheme in CONCENTRATOR_SCHEMES:
            return await _terminal_clock(url, secrets, checked, policy, trace)
        if policy is not None:
            check_write_target(protocol, address, unit)
        channel, driver = await open_driver(
            url, protocol, address, unit, model, secrets, checked, via, writes=sync, trace=trace
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
        return await _audited_clock_sync(database, me, (entity, target), url, dial_in, sync_clock)

    result = run_field(work, protocol)
    print_result(result, as_json, field_table("meter clock" if address else "clock", result))


def _check_clock_write(operator: str | None, dsn_given: bool, no_record: bool) -> None:
    """A clock write names its operator and is audited, or is explicitly unrecorded (and then no
    database is named)."""
    if operator is None:
        raise FieldError("--sync writes the clock: --operator is required")
    check_operator_id(operator)
    if dsn_given and no_record:
        raise FieldError(
            "--no-record: a database is configured, so the clock write is audited; drop the flag"
        )


async def _audited_clock_sync(
    database: str,
    me: Login,
    target: tuple[str, str],
    url: str,
    dial_in: DialIn,
    sync_clock: Callable[[DialIn], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Sign the operator in, correct the clock (a meter behind a DTU that dials in first answers the
    number the inventory records for it), and audit what was written (nothing when none was) against
    ``target`` (entity, id)."""
    try:
        conn = await asyncpg.connect(database)
    except (OSError, asyncpg.PostgresError) as exc:
        raise FieldError(f"database: {exc}") from None
    try:
        operator = await me.sign_in(conn, "operator")
        entity, entity_id = target
        checked = await recorded_dial_in(conn, dial_in, entity_id) if entity == "meter" else dial_in
        result = await sync_clock(checked)
        if result.get("action") not in ("none", "skipped"):
            details = {"channel": url, **{k: v for k, v in result.items() if k != "reason"}}
            await audit(conn, operator.id, "clock_set", entity, entity_id, str(result["reason"]), details)
        return result
    except asyncpg.PostgresError as exc:
        raise FieldError(f"database: {exc}") from None
    finally:
        await conn.close()


async def _terminal_clock(
    url: str, secrets: str | None, dial_in: DialIn, policy: ClockPolicy | None, trace: bool
) -> dict[str, Any]:
    """A concentrator's clock: AFN 0C F2, and with a ``policy`` (a sync) AFN 05 F31 under it."""
    pw = meter_secrets(secrets, policy is not None).concentrator_pw(parse_channel_url(url).terminal)
    link = await open_field_channel(url, dial_in.listen, dial_in.wait_s)
    assert isinstance(link, ConcentratorLink)
    link.set_pw(pw)
    if trace:
        attach(link, "gdw1376")
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
