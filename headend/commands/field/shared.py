"""What the field commands share: the common options, the one way to open a channel and build the
meter's driver (as the engine does), and the one way to report a failure or print a result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from headend import limits
from headend.commands.field.trace import attach
from headend.commands.listen import open_field_channel
from headend.drivers import DriverError, MeterTimeout, make_driver
from headend.drivers.gdw1376_terminal import read_archive
from headend.secrets import MeterSecrets, SecretsError
from headend.store.inventory import recorded_numbers
from headend.transport import (
    CONCENTRATOR_SCHEMES,
    ChannelError,
    ChannelUrlError,
    ConcentratorLink,
    check_protocol,
    parse_channel_url,
)
from headend.transport.bus import VerifiedBus
from protocols.dlt645 import (
    DLT645Error,
    EncodeError,
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
Trace = Annotated[
    bool, typer.Option("--trace", help="Print every frame sent and received on stderr (time, hex, meaning).")
]
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


def checked_url(url: str, protocol: str) -> None:
    """The channel URL is valid and fits the protocol (the daemon's rules), else one FieldError line."""
    if protocol not in PROTOCOLS:
        raise FieldError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    try:
        check_protocol(protocol, parse_channel_url(url))
    except ChannelUrlError as exc:
        hint = "; for a Modbus meter pass --protocol modbus --unit N" if protocol != "modbus" else ""
        raise FieldError(f"{exc}{hint}") from None


def meter_secrets(path: str | None, writes: bool) -> MeterSecrets:
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


async def recorded_dial_in(conn: asyncpg.Connection, dial_in: DialIn, meter: str) -> DialIn:
    """``dial_in`` with the meter number the inventory records for ``meter`` (name or address): with a
    database that number, not only one typed with ``--meter-number``, must answer before a password
    goes to a DTU that dialled in. A typed number that differs from it is refused (FieldError)."""
    if dial_in.listen is None:
        return dial_in
    found = await recorded_numbers(conn, meter)
    numbers = {number for _label, number in found if number is not None}
    if len(numbers) > 1:
        labels = ", ".join(label for label, _number in found)
        raise FieldError(f"{meter!r} names several meters ({labels}): give --meter NAME")
    if not numbers:
        return dial_in
    recorded = numbers.pop()
    if dial_in.meter_number is not None and dial_in.meter_number != recorded:
        raise FieldError(
            f"--meter-number {dial_in.meter_number} is not the number the inventory records for meter"
            f" {found[0][0]} ({recorded}): nothing sent"
        )
    return replace(dial_in, meter_number=recorded)


async def verify_dial_in(channel: Any, driver: Any, dial_in: DialIn, via: Via, writes: bool) -> None:
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


async def open_driver(
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
    trace: bool = False,
) -> tuple[Any, Any]:
    """The channel (for a device that dials in, listening first) and the meter's driver; every
    argument is checked before anything is opened. With ``trace`` every frame is printed on stderr."""
    checked_url(url, protocol)
    if parse_channel_url(url).scheme in CONCENTRATOR_SCHEMES:
        if not address:
            raise FieldError("--address is required for DL/T 645 meters")
        if via.port is None:
            raise FieldError("--port is required for a meter behind a concentrator")
        store = meter_secrets(secrets, writes)
        link = await open_field_channel(url, dial_in.listen, dial_in.wait_s)
        if trace:
            attach(link, protocol)
        point = {"port": via.port, "pn": via.pn}
        try:
            meter = make_driver(protocol, link, address.rjust(12, "0"), model, store, **point)
            await verify_dial_in(link, meter, dial_in, via, writes)
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
        credentials = meter_secrets(secrets, writes)
    channel = await open_field_channel(url, dial_in.listen, dial_in.wait_s, dial_in.heartbeat)
    if trace:
        attach(channel, protocol)
    try:
        if credentials is None:
            return channel, make_driver("modbus", channel, target, model)
        driver = make_driver(protocol, channel, target, model, credentials)
        await verify_dial_in(channel, driver, dial_in, via, writes)
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


def timeout_hint(protocol: str) -> str:
    """What to try when a meter does not answer."""
    if protocol == "modbus":
        return (
            "check --unit (headend scan --units 1-247 finds them) and the line settings in the URL"
            " (?baud=9600&parity=N)"
        )
    other = "dlt645-1997" if protocol == "dlt645-2007" else "dlt645-2007"
    return (
        f"try the other edition (--protocol {other}), check the address (headend scan finds it) and the"
        " line settings in the URL (?baud=2400&parity=E)"
    )


def run_field(work: Callable[[], Coroutine[Any, Any, Any]], protocol: str | None = None) -> Any:
    """Run the command's coroutine; turn every expected failure into one line and exit code 1 (a
    meter that does not answer: with what to try, when the protocol is known)."""
    try:
        return asyncio.run(work())
    except MeterTimeout as exc:
        hint = f"; {timeout_hint(protocol)}" if protocol else ""
        typer.echo(f"error: {exc}{hint}", err=True)
        raise typer.Exit(code=1) from None
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


def field_table(title: str, data: dict[str, Any]) -> Table:
    """A two-column table of a result object (nested objects shown as JSON)."""
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value))
    return table


def print_result(data: dict[str, Any], as_json: bool, table: Table) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(data), ensure_ascii=False))
    else:
        Console().print(table)
