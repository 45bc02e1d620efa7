"""``headend concentrator archive diff|push CHANNEL``: a concentrator's meter archive vs the inventory.

``diff`` queries the archive (AFN 0A F10) and prints what is missing, different or extra (exit 1
when they disagree); ``push`` downloads the inventory's records (AFN 04 F10, PW from the secrets
file; Pn as stored in the inventory, so each meter keeps its Pn), deletes the extra ones, and
queries the archive again to confirm (exit 1 if it still disagrees); it signs in an operator with the
``operator`` role first and audits the push under them. CHANNEL is the inventory's
channel name; a concentrator that dials in (``gdw1376://``) is awaited on ``--listen HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import asyncpg
import typer
from rich.table import Table

from headend.commands.app import CommandGroup
from headend.commands.auth import Login, OperatorId, login
from headend.commands.common import Dsn, fail, target_dsn
from headend.commands.listen import open_field_channel
from headend.commands.views import console
from headend.drivers.base import DriverError
from headend.drivers.gdw1376_terminal import ArchiveDiff, ArchivePoint, diff_archive, push_archive
from headend.operators import OperatorError
from headend.secrets import MeterSecrets, SecretsError
from headend.store.audit import audit
from headend.store.concentrators import channel_of, channel_points
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

EDITIONS = {"dlt645-2007": 2007, "dlt645-1997": 1997}
Channel = Annotated[str, typer.Argument(help="The concentrator's channel name in the inventory.")]
Listen = Annotated[str | None, typer.Option("--listen", help="Dial-in concentrator: wait on HOST:PORT.")]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for a dial-in concentrator.")]
Secrets = Annotated[str | None, typer.Option("--secrets", help="Secrets TOML with the concentrator PW.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


class ArchiveCommandError(Exception):
    """A failure to report as one line (exit code 2)."""


async def _inventory(dsn: str, channel: str) -> tuple[str, list[ArchivePoint]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await channel_of(conn, channel)
        if found is None:
            raise ArchiveCommandError(f"no channel named {channel!r}")
        channel_id, url = found
        points = await channel_points(conn, channel_id)
    finally:
        await conn.close()
    return url, [ArchivePoint(p.pn, p.port, p.address, EDITIONS.get(p.protocol, 2007)) for p in points]


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
    """What a push would change, in one line."""
    deleted = ", ".join(f"pn {r.pn} ({r.address})" for r in diff.extra) or "none"
    return (
        f"the push writes {len(diff.missing) + len(diff.different)} record(s) and deletes"
        f" {len(diff.extra)}: {deleted}"
    )


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


def _run(
    dsn: str | None,
    channel: str,
    secrets: str | None,
    listen: str | None,
    wait: float,
    pusher: Login | None,
    confirm: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    database = target_dsn(dsn)
    try:
        return asyncio.run(_archive(database, channel, secrets, listen, wait, pusher, confirm))
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
    _show(_run(dsn, channel, secrets, listen, wait, None), as_json)


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
    will write and delete and asks first (or --yes); --dry-run only shows it."""
    if dry_run:
        _show(_run(dsn, channel, secrets, listen, wait, None), as_json)
        return
    if not yes and not sys.stdin.isatty():
        fail("archive push rewrites the concentrator's archive: give --yes (see it first with --dry-run)")
    pusher = login(operator)

    def confirm(plan: str) -> bool:
        typer.echo(plan, err=True)
        return yes or typer.confirm("push?", default=False, err=True)

    _show(_run(dsn, channel, secrets, listen, wait, pusher, confirm), as_json)


def register(app: typer.Typer) -> None:
    """Attach ``concentrator`` to the CLI."""
    app.add_typer(concentrator_app, name="concentrator")
