"""``headend concentrator archive diff|push CHANNEL``: a concentrator's meter archive vs the inventory.

``diff`` queries the archive (AFN 0A F10) and prints what is missing, different or extra (exit 1
when they disagree); ``push`` downloads the inventory's records (AFN 04 F10, PW from the secrets
file; Pn as stored in the inventory, so each meter keeps its Pn), deletes the extra ones, and
queries the archive again to confirm (exit 1 if it still disagrees); it signs in an operator with the
``operator`` role first and audits the push under them. CHANNEL is the inventory's
channel name; a concentrator that dials in (``gdw1376://``) is awaited on ``--listen HOST:PORT``, and
without ``--listen`` ``push`` goes through the running daemon that holds its connection
(:mod:`headend.commands.archive_requests`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.table import Table

from headend.commands.app import CommandGroup
from headend.commands.archive_requests import ArchiveCommandError, inventory_of, plan, push_through_daemon
from headend.commands.auth import Login, OperatorId, login
from headend.commands.common import Dsn, fail, target_dsn
from headend.commands.listen import open_field_channel
from headend.commands.views import console
from headend.drivers.base import DriverError
from headend.drivers.gdw1376_terminal import ArchiveDiff, ArchivePoint, diff_archive, push_archive
from headend.operators import Operator, OperatorError
from headend.secrets import MeterSecrets, SecretsError
from headend.store.audit import audit
from headend.transport import (
    CONCENTRATOR_SCHEMES,
    ChannelError,
    ChannelUrlError,
    ConcentratorLink,
    parse_channel_url,
)

concentrator_app = CommandGroup(help="Q/GDW 1376.1 concentrators.", no_args_is_help=True)
archive_app = CommandGroup(help="A concentrator's meter archive vs the inventory.", no_args_is_help=True)
concentrator_app.add_typer(archive_app, name="archive")

MAX_REQUEST_WAIT_S = 86400.0  # an archive request expires within a day (migration 0040)
Channel = Annotated[str, typer.Argument(help="The concentrator's channel name in the inventory.")]
Listen = Annotated[str | None, typer.Option("--listen", help="Dial-in concentrator: wait on HOST:PORT.")]
Wait = Annotated[
    float,
    typer.Option(
        "--wait", help="Seconds to wait for a dial-in concentrator (on --listen, or for the daemon)."
    ),
]
Secrets = Annotated[str | None, typer.Option("--secrets", help="Secrets TOML with the concentrator PW.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


async def _inventory(dsn: str, channel: str) -> tuple[str, list[ArchivePoint]]:
    conn = await asyncpg.connect(dsn)
    try:
        _channel_id, url, points = await inventory_of(conn, channel)
    finally:
        await conn.close()
    return url, points


async def _link(
    url: str, channel: str, secrets: str | None, listen: str | None, wait: float
) -> ConcentratorLink:
    config = parse_channel_url(url)
    if config.scheme not in CONCENTRATOR_SCHEMES:
        raise ArchiveCommandError(f"channel {channel!r} is not a concentrator ({url})")
    pw = MeterSecrets.load(secrets).concentrator_pw(config.terminal)
    try:
        link = await open_field_channel(url, listen, wait)
    except ValueError as exc:
        raise ArchiveCommandError(str(exc)) from None
    assert isinstance(link, ConcentratorLink)
    link.set_pw(pw)
    return link


def _plan(diff: ArchiveDiff) -> str:
    return plan(len(diff.missing) + len(diff.different), [(r.pn, r.address) for r in diff.extra])


async def _archive(
    dsn: str,
    channel: str,
    secrets: str | None,
    listen: str | None,
    wait: float,
    pusher: Login | None,
    confirm: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Diff the archive with the inventory; with ``pusher`` (signed in as an operator before the
    concentrator is touched) push the differences, once ``confirm`` (given the plan) agrees, and
    audit the push under them."""
    url, points = await _inventory(dsn, channel)
    conn = await asyncpg.connect(dsn) if pusher is not None else None
    try:
        signed_in = await pusher.sign_in(conn, "operator") if pusher is not None and conn else None
        link = await _link(url, channel, secrets, listen, wait)
        try:
            diff = await diff_archive(link, points)
            result: dict[str, Any] = {"channel": channel, "concentrator": link.key, **diff.to_json()}
            if not diff.agrees:
                result["plan"] = _plan(diff)
            if confirm is not None and not diff.agrees and not confirm(result["plan"]):
                raise ArchiveCommandError("archive push declined; nothing was written")
            if signed_in is not None and conn is not None and not diff.agrees:
                result["pushed"] = await push_archive(link, diff)
                after = await diff_archive(link, points)
                result["after"] = after.to_json()
                result["agrees"] = after.agrees
                details = {"concentrator": link.key, "pushed": result["pushed"], "agrees": after.agrees}
                await audit(
                    conn,
                    signed_in.id,
                    "concentrator.archive_pushed",
                    "channel",
                    channel,
                    "archive push",
                    details,
                )
        finally:
            await link.close()
    finally:
        if conn is not None:
            await conn.close()
    return result


T = TypeVar("T")


def _run(dsn: str | None, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """``work(database)`` with its failures as one line."""
    database = target_dsn(dsn)
    try:
        return asyncio.run(work(database))
    except OperatorError as exc:
        fail(str(exc))
    except (
        ArchiveCommandError,
        ChannelError,
        ChannelUrlError,
        DriverError,
        SecretsError,
        ValueError,
        OSError,
        asyncpg.PostgresError,
    ) as exc:
        fail(str(exc), code=2)


def _through_daemon(dsn: str | None, channel: str, listen: str | None) -> bool:
    """Whether a push goes through the daemon: the concentrator dials in and no --listen is given."""
    if listen is not None:
        return False

    async def url_of(database: str) -> str:
        return (await _inventory(database, channel))[0]

    url = _run(dsn, url_of)
    try:
        config = parse_channel_url(url)
    except ChannelUrlError:
        return False
    return config.device is not None and config.scheme in CONCENTRATOR_SCHEMES


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
    else:
        table = Table(title=f"archive of {result['concentrator']} ({result['channel']})")
        for column in ("state", "pn", "port", "address"):
            table.add_column(column)
        for state in ("missing", "extra"):
            for record in result[state]:
                table.add_row(state, str(record["pn"]), str(record["port"]), record["address"])
        for pair in result["different"]:
            wanted, found = pair["wanted"], pair["found"]
            table.add_row(
                "different", str(wanted["pn"]), f"{wanted['port']} (has {found['port']})", wanted["address"]
            )
        console().print(table)
        if "plan" in result and "pushed" not in result:
            typer.echo(result["plan"])
        summary = "agrees" if result["agrees"] else "disagrees"
        pushed = f"; pushed {result['pushed']} record(s)" if "pushed" in result else ""
        typer.echo(
            f"{result['matching']} matching record(s){pushed}; the archive {summary} with the inventory"
        )
    if not result["agrees"]:
        raise typer.Exit(code=1)


@archive_app.command("diff")
def diff_command(
    channel: Channel,
    dsn: Dsn = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    secrets: Secrets = None,
    as_json: Json = False,
) -> None:
    """Compare the concentrator's meter archive (AFN 0A F10) with the inventory; exit 1 if they differ."""
    _show(_run(dsn, lambda database: _archive(database, channel, secrets, listen, wait, None)), as_json)


@archive_app.command("push")
def push_command(
    channel: Channel,
    operator: OperatorId,
    dsn: Dsn = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    secrets: Secrets = None,
    as_json: Json = False,
    yes: Annotated[bool, typer.Option("--yes", help="Push without asking (scripts; no terminal).")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what the push would write and delete; change nothing.")
    ] = False,
) -> None:
    """Download the inventory's meters to the concentrator (AFN 04 F10), deleting the records the
    inventory does not have, and confirm by querying back (role operator; audited). Shows what it
    will write and delete and asks first (or --yes); --dry-run only shows it. A concentrator that
    dials in is reached through the running daemon unless --listen is given."""
    daemon = _through_daemon(dsn, channel, listen)
    if daemon and not 0 < wait <= MAX_REQUEST_WAIT_S:
        fail(f"--wait: more than 0 and at most {MAX_REQUEST_WAIT_S:g} s for a request to the daemon", code=2)
    if dry_run and not daemon:
        _show(_run(dsn, lambda database: _archive(database, channel, secrets, listen, wait, None)), as_json)
        return
    if not dry_run and not yes and not sys.stdin.isatty():
        fail("archive push rewrites the concentrator's archive: give --yes (see it first with --dry-run)")
    pusher = login(operator)

    def confirm(plan: str) -> bool:
        typer.echo(plan, err=True)
        return yes or typer.confirm("push?", default=False, err=True)

    if daemon:

        async def sign_in(conn: asyncpg.Connection) -> Operator:
            return await pusher.sign_in(conn, "operator")

        def through(database: str) -> Coroutine[Any, Any, dict[str, Any]]:
            return push_through_daemon(database, channel, sign_in, wait, None if dry_run else confirm)

        _show(_run(dsn, through), as_json)
        return
    _show(
        _run(dsn, lambda database: _archive(database, channel, secrets, listen, wait, pusher, confirm)),
        as_json,
    )


def register(app: typer.Typer) -> None:
    """Attach ``concentrator`` to the CLI."""
    app.add_typer(concentrator_app, name="concentrator")
