"""``headend operators``: add, disable, enable, unlock, passwd and list who may act on the head-end."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, TypeVar

import asyncpg
import typer

from headend.commands.app import CommandGroup
from headend.commands.auth import Login, OperatorId, login
from headend.commands.common import Dsn
from headend.config import parse_duration
from headend.operators import (
    SCOPES,
    OperatorError,
    check_operator_id,
    check_roles,
    check_scopes,
    hash_password,
    new_token,
    token_digest,
)
from headend.store import api_tokens
from headend.store import operators as store
from headend.store.dsn import resolve_dsn

NEW_PASSWORD_ENV = "HEADEND_NEW_OPERATOR_PASSWORD"
operators_app = CommandGroup(help="Operators (工号), their roles and passwords.", no_args_is_help=True)
T = TypeVar("T")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _run(dsn: str | None, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on a fresh connection; refusals (ours or the database's) are one line, exit 1."""

    async def main() -> T:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except OperatorError as exc:
        _fail(str(exc))
    except (asyncpg.InsufficientPrivilegeError, asyncpg.CheckViolationError) as exc:
        _fail(exc.args[0] if exc.args else str(exc))
    except asyncpg.UniqueViolationError:
        _fail("an operator with this id already exists")
    except asyncpg.NoDataFoundError as exc:
        _fail(exc.args[0] if exc.args else str(exc))
    raise AssertionError("unreachable")


def _new_password(operator_id: str) -> str:
    """The new password: ``$HEADEND_NEW_OPERATOR_PASSWORD`` or a hidden prompt typed twice; hashed here."""
    password = os.environ.get(NEW_PASSWORD_ENV)
    if password is None:
        password = typer.prompt(
            f"new password of operator {operator_id}", hide_input=True, confirmation_prompt=True
        )
    try:
        return hash_password(password)
    except OperatorError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _checked_id(text: str) -> str:
    try:
        return check_operator_id(text)
    except OperatorError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


@operators_app.command("add")
def add(
    operator_id: Annotated[
        str, typer.Argument(metavar="ID", help="The new operator's id (工号, 1-8 digits).")
    ],
    name: Annotated[str, typer.Option("--name", help="Full name.")],
    roles: Annotated[str, typer.Option("--roles", help="Of viewer,operator,approver,cashier,admin.")],
    operator: Annotated[str | None, typer.Option("--operator", help="Your operator id (an admin).")] = None,
    bootstrap: Annotated[
        bool,
        typer.Option(
            "--bootstrap", help="Create the first admin (no operator exists yet; schema owner's DSN only)."
        ),
    ] = False,
    dsn: Dsn = None,
) -> None:
    """Add an operator (an authenticated admin; the first admin with --bootstrap)."""
    new_id = _checked_id(operator_id)
    if not name.strip():
        _fail("--name must not be blank")
    try:
        role_list = check_roles(roles)
    except OperatorError as exc:
        _fail(str(exc))
    if bootstrap == (operator is not None):
        _fail("give --operator (an admin) or, for the very first operator, --bootstrap")
    if bootstrap and "admin" not in role_list:
        _fail("the first operator (--bootstrap) must hold the admin role")
    admin: Login | None = None if bootstrap else login(operator)
    password_hash = _new_password(new_id)

    async def work(conn: asyncpg.Connection) -> None:
        if admin is None:
            if await store.operator_count(conn):
                raise OperatorError("operators exist already: --bootstrap only creates the first admin")
        else:
            await admin.sign_in(conn, "admin")
        await store.add_operator(conn, new_id, name.strip(), role_list, password_hash)

    _run(dsn, work)
    typer.echo(f"operator {new_id} ({name.strip()}) added with roles {', '.join(role_list)}")


AdminChange = Callable[[asyncpg.Connection, str, str], Awaitable[bool]]


def _admin_change(operator_id: str, reason: str, operator: str, dsn: str | None, change: AdminChange) -> str:
    """Sign in as an admin and apply ``change(conn, target, reason)`` to one operator; the target id."""
    target = _checked_id(operator_id)
    if not reason.strip():
        _fail("--reason must not be blank")
    admin = login(operator)

    async def work(conn: asyncpg.Connection) -> bool:
        await admin.sign_in(conn, "admin")
        return await change(conn, target, reason.strip())

    if not _run(dsn, work):
        _fail(f"no operator {target}")
    return target


async def _set_active(conn: asyncpg.Connection, target: str, reason: str, *, active: bool) -> bool:
    return await store.set_active(conn, target, active, reason)


@operators_app.command("disable")
def disable(
    operator_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Disable an operator: they can no longer sign in, and their open session ends."""
    change = partial(_set_active, active=False)
    typer.echo(f"operator {_admin_change(operator_id, reason, operator, dsn, change)} disabled")


@operators_app.command("enable")
def enable(
    operator_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Enable a disabled operator again."""
    change = partial(_set_active, active=True)
    typer.echo(f"operator {_admin_change(operator_id, reason, operator, dsn, change)} enabled")


@operators_app.command("unlock")
def unlock(
    operator_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited), e.g. who was verified how.")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """End an operator's sign-in lock (five wrong passwords in a row lock it for 15 minutes)."""
    typer.echo(f"operator {_admin_change(operator_id, reason, operator, dsn, store.unlock)} unlocked")


@operators_app.command("passwd")
def passwd(
    operator_id: Annotated[
        str, typer.Argument(metavar="ID", help="Whose password (yours, or any as an admin).")
    ],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Set a new password: your own (any role), or another operator's as an admin."""
    target = _checked_id(operator_id)
    me = login(operator)
    password_hash = _new_password(target)

    async def work(conn: asyncpg.Connection) -> bool:
        await me.sign_in(conn, "admin" if me.operator_id != target else None)
        return await store.set_password(conn, target, password_hash)

    if not _run(dsn, work):
        _fail(f"no operator {target}")
    typer.echo(f"password of operator {target} changed")


@operators_app.command("list")
def list_operators(dsn: Dsn = None) -> None:
    """Operators as JSON lines (never their password hashes)."""
    for record in _run(dsn, store.list_operators):
        typer.echo(
            json.dumps(
                {
                    "id": record.id,
                    "name": record.name,
                    "roles": record.roles,
                    "active": record.active,
                    "created_by": record.created_by,
                    "created_at": record.created_at.isoformat(),
                    "failed_sign_ins": record.failed_sign_ins,
                    "locked_until": record.locked_until.isoformat() if record.locked_until else None,
                },
                ensure_ascii=False,
            )
        )


tokens_app = CommandGroup(help="Sign-in tokens for scripts ($HEADEND_OPERATOR_TOKEN).", no_args_is_help=True)
operators_app.add_typer(tokens_app, name="token")
MAX_TOKEN_DAYS = 366


@tokens_app.command("add")
def token_add(
    operator_id: Annotated[
        str, typer.Argument(metavar="ID", help="Whose token (yours, or any as an admin).")
    ],
    label: Annotated[str, typer.Option("--label", help="What the token is for, e.g. 'bank import cron'.")],
    operator: OperatorId,
    roles: Annotated[
        str, typer.Option("--roles", help="The token's roles: a subset of the operator's (or --scope).")
    ] = "",
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"An API token's scope (admin only; repeat): {', '.join(SCOPES)}. Its roles are the ones"
            " the scopes need.",
        ),
    ] = None,
    expires: Annotated[
        str, typer.Option("--expires", help=f"Lifetime, e.g. 30d or 12h (at most {MAX_TOKEN_DAYS}d).")
    ] = "90d",
    dsn: Dsn = None,
) -> None:
    """Make a sign-in token (``--roles``) or a scoped API token (``--scope``); it is printed once (keep
    it like a password) and stored as a digest only."""
    target = _checked_id(operator_id)
    if not label.strip():
        _fail("--label must not be blank")
    if bool(roles.strip()) == bool(scopes):
        _fail("give either --roles (a sign-in token) or --scope (an API token)")
    try:
        role_list = check_roles(roles) if roles.strip() else []
        scope_list = check_scopes(scopes) if scopes else []
        lifetime = timedelta(seconds=parse_duration(expires))
    except (OperatorError, ValueError) as exc:
        _fail(f"{exc}")
    if not timedelta(0) < lifetime <= timedelta(days=MAX_TOKEN_DAYS):
        _fail(f"--expires must be more than 0 and at most {MAX_TOKEN_DAYS}d, not {expires!r}")
    me = login(operator)
    token = new_token()
    expires_at = datetime.now(UTC) + lifetime

    async def work(conn: asyncpg.Connection) -> int:
        if scope_list:
            await me.sign_in(conn, "admin")
            return await api_tokens.add_scoped_token(
                conn, target, label.strip(), scope_list, token_digest(token), expires_at
            )
        await me.sign_in(conn, "admin" if me.operator_id != target else None)
        return await store.add_token(conn, target, label.strip(), role_list, token_digest(token), expires_at)

    token_id = _run(dsn, work)
    until = f"{expires_at:%Y-%m-%d %H:%M} UTC"
    what = f"scopes {', '.join(scope_list)}" if scope_list else ", ".join(role_list)
    typer.echo(f"token {token_id} for operator {target} ({what}), expires {until}:")
    typer.echo(token)


tokens_app.command("create", hidden=True)(token_add)  # the same command under the name the API docs use


@tokens_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        int, typer.Argument(metavar="TOKEN", min=1, max=2**63 - 1, help="The token's number.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Revoke a token at once (its operator, or an admin)."""
    if not reason.strip():
        _fail("--reason must not be blank")
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> bool:
        await me.sign_in(conn, None)
        return await store.revoke_token(conn, token_id, reason.strip())

    if not _run(dsn, work):
        _fail(f"no token {token_id}")
    typer.echo(f"token {token_id} revoked")


@tokens_app.command("list")
def token_list(
    operator: OperatorId,
    operator_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Whose tokens (default: everyone's).")
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Tokens as JSON lines, never the tokens themselves: your own, or anyone's as an admin."""
    target = _checked_id(operator_id) if operator_id is not None else None
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> list[store.TokenRecord]:
        await me.sign_in(conn, None)
        return await store.list_tokens(conn, target)

    for record in _run(dsn, work):
        fields = {
            "id": record.id,
            "operator": record.operator_id,
            "label": record.label,
            "roles": record.roles,
            "scopes": record.scopes,
            "created_by": record.created_by,
        }
        for name in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            value = getattr(record, name)
            fields[name] = value.isoformat() if value is not None else None
        typer.echo(json.dumps(fields, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Attach ``headend operators``."""
    app.add_typer(operators_app, name="operators")
