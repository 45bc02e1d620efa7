"""Field-engineer commands: read, switch, clock, profile and scan one bus, through the daemon's code path.

Every command opens the channel and builds the driver exactly as the engine does
(``headend.transport.open_channel`` + ``headend.drivers.make_driver``). Meters behind a Q/GDW 1376.1
concentrator (``gdw1376+tcp://host:port?address=…``, or ``gdw1376://ADDRESS --listen HOST:PORT`` for
one that dials in, like ``dtu://ID --listen HOST:PORT`` for a DTU) need ``--port`` (the
concentrator's port of the meter); with ``--pn`` energy comes
from the concentrator's collection (AFN 0C F129), everything else is forwarded (AFN 10 F1).
``clock`` without ``--address`` on a concentrator URL is the concentrator's own clock.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from headend import limits
from headend.commands.auth import Login, login
from headend.commands.common import ConfigOption, chosen_config
from headend.commands.listen import Heartbeat, Listen, Wait, open_field_channel
from headend.control.field_switch import field_switch
from headend.drivers import DriverError, ModbusDriver, make_driver
from headend.drivers.gdw1376_terminal import TerminalClock, read_archive, read_terminal_clock
from headend.engine.clock import ClockPolicy, check_clock
from headend.operators import OperatorError, check_operator_id
from headend.secrets import MeterSecrets, SecretsError
from headend.store.audit import audit
from headend.transport import (
    CONCENTRATOR_SCHEMES,
    Channel,
    ChannelError,
    ChannelUrlError,
    ConcentratorLink,
    ModbusChannel,
    check_protocol,
    parse_channel_url,
)
from headend.transport.bus import VerifiedBus
from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    Deframer,
    DLT645Error,
    EncodeError,
    build_read,
    build_read_address,
    decode,
    unicast_address,
)
from protocols.dlt645.frame import jsonable

PROTOCOLS = ("dlt645-2007", "dlt645-1997", "modbus")
Url = Annotated[
    str,
    typer.Argument(
        help="Channel URL: serial:///dev/ttyUSB0?baud=2400&parity=E, tcp://host:port, dtu://ID + --listen"
    ),
]
Protocol = Annotated[str, typer.Option("--protocol", "-p", help="dlt645-2007, dlt645-1997 or modbus.")]
Address = Annotated[str | None, typer.Option("--address", "-a", help="DL/T 645 meter address (12 digits).")]
Unit = Annotated[int | None, typer.Option("--unit", help="Modbus unit id.")]
Model = Annotated[str | None, typer.Option("--model", help="Meter model file in protocols/models.")]
Secrets = Annotated[str | None, typer.Option("--secrets", help="Secrets TOML with meter passwords.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Port = Annotated[int | None, typer.Option("--port", help="Behind a concentrator: the meter's port (1..31).")]
Pn = Annotated[
    int | None, typer.Option("--pn", help="Behind a concentrator: the meter's Pn (energy read natively).")
]


@dataclass(frozen=True, slots=True)
class Via:
    """Where a meter sits behind a concentrator (both None on a plain bus)."""

    port: int | None = None
    pn: int | None = None


class FieldError(Exception):
    """A failure to report as one line with a non-zero exit code."""


def _checked_url(url: str, protocol: str) -> None:
    """The channel URL is valid and fits the protocol (the daemon's rules), else one FieldError line."""
    if protocol not in PROTOCOLS:
        raise FieldError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    try:
        check_protocol(protocol, parse_channel_url(url))
    except ChannelUrlError as exc:
        hint = "; for a Modbus meter pass --protocol modbus --unit N" if protocol != "modbus" else ""
        raise FieldError(f"{exc}{hint}") from None


def _secrets(path: str | None, writes: bool) -> MeterSecrets:
    """Meter passwords; unreadable secrets stop writes only (reads need no password)."""
    try:
        return MeterSecrets.load(path)
    except SecretsError:
        if writes:
            raise
        return MeterSecrets()


MeterNumber = Annotated[
    str | None,
    typer.Option(
        "--meter-number",
        help="Through a DTU that dials in: the meter's number (04 00 04 02); the password goes out only"
        " after the meter answered with it.",
    ),
]
ARCHIVE_SCAN = 64  # archive serials searched for the meter when verifying a dial-in concentrator


@dataclass(frozen=True, slots=True)
class DialIn:
    """The ``--listen`` options: for a device that dials in (``dtu://ID``, ``gdw1376://ADDRESS``),
    where it dials, how long to wait, and the meter number that verifies a DTU before a write."""

    listen: str | None = None
    wait_s: float = 60.0
    heartbeat: str = ""
    meter_number: str | None = None


async def _verify_dial_in(channel: Any, driver: Any, dial_in: DialIn, via: Via, writes: bool) -> None:
    """No password to a device that dialled in before it proved who it is: a concentrator's archive
    must list the meter (address on ``--port``, at ``--pn`` if given), a DTU's meter must answer
    ``--meter-number`` (needed for writes). Raises FieldError for other meters or a missing number."""
    if not isinstance(channel, VerifiedBus) or not channel.verification_due:
        return
    if isinstance(channel, ConcentratorLink):
        serials = [via.pn] if via.pn is not None else list(range(1, ARCHIVE_SCAN + 1))

        async def listed() -> bool:
            found = await read_archive(channel, serials)
            return any(
                r.address == driver.address and r.port == via.port and (via.pn is None or r.pn == via.pn)
                for r in found.values()
            )

        if await channel.verify(listed) is False:
            raise FieldError(
                f"{channel.label}: its archive does not list meter {driver.address}: not trusted"
            )
        return
    if dial_in.meter_number is None:
        if writes:
            raise FieldError(
                f"{channel.label} dialled in: give --meter-number (the meter's 04 00 04 02) so that it"
                " proves who it is before the password is sent"
            )
        return
    number = dial_in.meter_number

    async def answers() -> bool:
        return str(await driver.read_di("04000402")) == number

    if await channel.verify(answers) is False:
        raise FieldError(f"{channel.label}: meter {driver.address} does not answer meter number {number}")


async def _driver(
    url: str,
    protocol: str,
    address: str | None,
    unit: int | None,
    model: str | None,
    secrets: str | None,
    dial_in: DialIn,
    via: Via = Via(),
    *,
    writes: bool = False,
) -> tuple[Any, Any]:
    """The channel (for a device that dials in, listening first) and the meter's driver; every
    argument is checked before anything is opened."""
    _checked_url(url, protocol)
    if parse_channel_url(url).scheme in CONCENTRATOR_SCHEMES:
        if not address:
            raise FieldError("--address is required for DL/T 645 meters")
        if via.port is None:
            raise FieldError("--port is required for a meter behind a concentrator")
        store = _secrets(secrets, writes)
        link = await open_field_channel(url, dial_in.listen, dial_in.wait_s)
        point = {"port": via.port, "pn": via.pn}
        try:
            meter = make_driver(protocol, link, address.rjust(12, "0"), model, store, **point)
            await _verify_dial_in(link, meter, dial_in, via, writes)
        except BaseException:
            await link.close()
            raise
        return link, meter
    if via.port is not None or via.pn is not None:
        raise FieldError("--port and --pn are for meters behind a concentrator (gdw1376 URLs)")
    if protocol == "modbus":
        if unit is None:
            raise FieldError("--unit is required for Modbus meters")
        limits.unit_id(unit, "--unit")
        target: str | int = unit
        credentials = None
    else:
        if not address:
            raise FieldError("--address is required for DL/T 645 meters")
        if not address.isdigit() or len(address) > 12:
            raise FieldError(f"--address must be up to 12 decimal digits, got {address[:40]!r}")
        target = address.rjust(12, "0")
        credentials = _secrets(secrets, writes)
    channel = await open_field_channel(url, dial_in.listen, dial_in.wait_s, dial_in.heartbeat)
    try:
        if credentials is None:
            return channel, make_driver("modbus", channel, target, model)
        driver = make_driver(protocol, channel, target, model, credentials)
        await _verify_dial_in(channel, driver, dial_in, via, writes)
        return channel, driver
    except BaseException:
        await channel.close()  # a --listen channel stops its listener
        raise


def check_write_target(protocol: str, address: str | None, unit: int | None) -> None:
    """Refuse a write whose target is not exactly one meter: DL/T 645 wildcard (AA), broadcast
    (99..99), non-BCD or short addresses; Modbus unit 0 (broadcast)."""
    if protocol == "modbus":
        if unit == 0:
            raise FieldError("--unit 0 is the Modbus broadcast: a write must name exactly one meter")
        return
    if address:
        try:
            unicast_address(address)
        except EncodeError as exc:
            raise FieldError(f"--address: {exc}") from None


def _run(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run the command's coroutine; turn every expected failure into one line and exit code 1."""
    try:
        return asyncio.run(work())
    except (
        FieldError,
        DriverError,
        ChannelError,
        ChannelUrlError,
        SecretsError,
        DLT645Error,
        ValueError,
    ) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _field_table(title: str, data: dict[str, Any]) -> Table:
    """A two-column table of a result object (nested objects shown as JSON)."""
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value))
    return table


def _print(data: dict[str, Any], as_json: bool, table: Table) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(data), ensure_ascii=False))
    else:
        Console().print(table)


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
    port: Port = None,
    pn: Pn = None,
) -> None:
    """Read quantities or raw data identifiers from one meter."""
    via = Via(port, pn)

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat), via
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

    result = _run(work)
    table = Table(title=f"meter {result['address']}")
    table.add_column("item")
    table.add_column("value")
    for name, value in result["values"].items():
        table.add_row(name, json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value))
    for name, reason in result["unsupported"].items():
        table.add_row(name, f"[red]{reason}[/red]")
    _print(result, as_json, table)


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
    dsn: Annotated[
        str | None, typer.Option("--dsn", help="Database that records the command (default: $HEADEND_DSN).")
    ] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="No database: switch without a command record or audit.")
    ] = False,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    meter_number: MeterNumber = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the command; send nothing.")] = False,
    as_json: Json = False,
    port: Port = None,
) -> None:
    """Switch one meter's relay and confirm it by reading the state back.

    With a database (--dsn or $HEADEND_DSN) the switch is a persisted command under the same safety
    gates and audit as the daemon's, run by an authenticated operator; without one, --no-record is
    required. Wildcard, broadcast and malformed addresses are always refused."""
    action = action.replace("-", "_")
    via = Via(port)
    database = dsn or os.environ.get("HEADEND_DSN")
    dial_in = DialIn(listen, wait, heartbeat, meter_number)
    try:
        if action not in ("off", "on", "close_allowed"):
            raise FieldError("action must be off, on or close-allowed")
        operator = check_operator_id(operator)
        check_write_target(protocol, address, unit)
        if database and no_record:
            raise FieldError(
                "--no-record: a database is configured, so the switch is recorded; drop the flag"
            )
        if not database and not no_record and not dry_run:
            raise FieldError(
                "no database configured (--dsn or $HEADEND_DSN) to record the switch;"
                " give --no-record to switch without a command record"
            )
        if database and not dry_run and not (reason or "").strip():
            raise FieldError("--reason is required: it is recorded with the command")
    except (FieldError, OperatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if database and not dry_run:
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
        )
        return

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, dial_in, via, writes=True
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

    result = _run(work)
    _print(result, as_json, _field_table(f"switch {action}", result))
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
            channel, driver = await _driver(
                url, protocol, address, unit, model, secrets, dial_in, via, writes=True
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

    result = _run(work)
    _print(result, False, _field_table(f"switch {action}: command {result['command']}", result))
    if result["state"] != "confirmed":
        command = result["command"]
        typer.echo(f"command {command} is {result['state']}: see `headend commands show {command}`", err=True)
        raise typer.Exit(code=1)


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
    config: Path | None = ConfigOption,
    as_json: Json = False,
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
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, dial_in, via, writes=sync
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

    result = _run(work)
    _print(result, as_json, _field_table("meter clock" if address else "clock", result))


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
    pw = _secrets(secrets, policy is not None).concentrator_pw(parse_channel_url(url).terminal)
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
) -> None:
    """Read interval records from the meter's load profile (or daily freeze)."""

    async def work() -> dict[str, Any]:
        if end <= start:
            raise FieldError(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat)
        )
        try:
            records = await driver.read_profile(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
        finally:
            await channel.close()
        return {
            "address": driver.address,
            "records": [{"ts": r.ts, "source": r.source, **r.values} for r in records],
        }

    result = _run(work)
    table = Table(title=f"profile of {result['address']}")
    for column in ("ts", "source", "energy_import_kwh"):
        table.add_column(column)
    for record in result["records"]:
        table.add_row(record["ts"].isoformat(), record["source"], str(record.get("energy_import_kwh")))
    _print(result, as_json, table)


def scan_command(
    url: Url,
    protocol: Protocol = "dlt645-2007",
    candidates: Annotated[str | None, typer.Option(help="Comma-separated addresses to probe.")] = None,
    model: Model = None,
    units: Annotated[str, typer.Option(help="Modbus unit ids to sweep, e.g. 1-32.")] = "1-32",
    one_meter: Annotated[
        bool,
        typer.Option(
            "--one-meter", help="The line has exactly one meter: ask it for its address (no candidates)."
        ),
    ] = False,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
) -> None:
    """Find meters on a bus: probe a candidate list, or ask the only meter of a one-meter line."""

    async def work() -> dict[str, Any]:
        _checked_url(url, protocol)
        if protocol == "modbus":
            return {
                "protocol": protocol,
                "units": await _sweep(
                    url, model or "eastron_sdm120", units, as_json, DialIn(listen, wait, heartbeat)
                ),
            }
        probes = _candidates(candidates)
        if not probes and not one_meter:
            raise FieldError(
                "a DL/T 645 line answers 'who is there' only when it has one meter (several reply at"
                " once and only one is heard): pass --candidates ADDR,ADDR,... or, on a one-meter line,"
                " --one-meter"
            )
        edition = 1997 if protocol == "dlt645-1997" else 2007
        channel = await open_field_channel(url, listen, wait, heartbeat)
        if not isinstance(channel, Channel):  # modbus and concentrator URLs fail _checked_url first
            await channel.close()
            raise FieldError("DL/T 645 scans need a serial://, tcp:// or dtu:// channel URL")
        found: list[str] = []
        try:
            with Progress(transient=True, disable=as_json) as progress:
                task = progress.add_task("scanning", total=max(1, len(probes)))
                if not probes:
                    request = (
                        build_read_address()
                        if edition == 2007
                        else build_read(BROADCAST_ADDRESS, "C032", 1997)
                    )
                    found += await _probe(channel, request)
                    progress.advance(task)
                for address in probes:
                    found += await _probe(
                        channel, build_read(address, "00010000" if edition == 2007 else "9010", edition)
                    )
                    progress.advance(task)
        finally:
            await channel.close()
        return {"protocol": protocol, "meters": sorted(set(found))}

    result = _run(work)
    table = Table(title="meters found")
    table.add_column("address / unit")
    for found in result.get("meters", result.get("units", [])):
        table.add_row(str(found))
    _print(result, as_json, table)


def _candidates(text: str | None) -> list[str]:
    """``--candidates`` as 12-digit addresses (each up to 12 decimal digits)."""
    if not text:
        return []
    addresses = [a.strip() for a in text.split(",")]
    for address in addresses:
        if not address.isdigit() or len(address) > 12:
            raise FieldError(f"--candidates: {address[:40]!r} is not a meter address (up to 12 digits)")
    return [a.rjust(12, "0") for a in addresses]


async def _sweep(url: str, model: str, units: str, quiet: bool, dial_in: DialIn) -> list[int]:
    """Modbus unit ids that answer a read of the model's first point."""
    ids = limits.unit_range(units)
    config = replace(parse_channel_url(url), retries=0)  # an absent unit id is silent: do not retry it
    gateway = config.scheme in ("modbus-tcp", "rtu-over-tcp")
    channel: ModbusChannel | Channel
    if config.scheme == "dtu" or dial_in.listen:
        opened = await open_field_channel(url, dial_in.listen, dial_in.wait_s, dial_in.heartbeat, retries=0)
        if isinstance(opened, ConcentratorLink):  # modbus on a concentrator fails _checked_url first
            await opened.close()
            raise FieldError("Modbus sweeps need a serial://, tcp://, dtu:// or Modbus gateway URL")
        channel = opened
    else:
        channel = ModbusChannel(config) if gateway else Channel(config)
    found = []
    try:
        with Progress(transient=True, disable=quiet) as progress:
            task = progress.add_task("sweeping unit ids", total=len(ids))
            for unit in ids:
                driver = make_driver("modbus", channel, unit, model)
                assert isinstance(driver, ModbusDriver)
                try:
                    await driver.read([next(iter(driver.model.points))])
                    found.append(unit)
                except DriverError:
                    pass
                progress.advance(task)
    finally:
        await channel.close()
    return found


async def _probe(channel: Channel, request: bytes) -> list[str]:
    """Addresses of meters answering ``request`` (any normal or abnormal reply counts)."""
    try:
        raw, _ = await channel.exchange(request, Deframer(), lambda frame: bool(frame[8] & 0x80), retries=0)
    except ChannelError as exc:
        if "timeout" in str(exc):
            return []
        raise
    return [decode(raw).address]


def register(app: typer.Typer) -> None:
    """Attach the field commands to the CLI."""
    app.command("read")(read_command)
    app.command("switch")(switch_command)
    app.command("clock")(clock_command)
    app.command("profile")(profile_command)
    app.command("scan")(scan_command)
