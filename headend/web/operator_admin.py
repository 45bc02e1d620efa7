"""The console's operator administration (admin role), through the same functions as ``headend
operators``, on the desk connection bound to the signed-in admin: the database checks the role again
and audits every change. A password the admin leaves blank is generated and shown once."""

from __future__ import annotations

import secrets

import asyncpg

from headend.operators import OperatorError, check_operator_id, check_roles, hash_password
from headend.store import operators as store
from headend.store.operators import OperatorRecord
from headend.web.actions import Refused
from headend.web.identity import Forbidden, Principal


def _password(given: str) -> tuple[str, str | None]:
    """(argon2 hash, the generated password to show once, or None when the admin set it)."""
    shown = None if given else secrets.token_urlsafe(12)
    try:
        return hash_password(given or shown or ""), shown
    except OperatorError as exc:
        raise Refused(str(exc)) from None


def _checked(operator_id: str) -> str:
    try:
        return check_operator_id(operator_id)
    except OperatorError as exc:
        raise Refused(str(exc)) from None


async def operators(conn: asyncpg.Connection, who: Principal) -> list[OperatorRecord]:
    """Every operator (never a password hash)."""
    who.require("admin")
    return await store.list_operators(conn)


async def add(
    conn: asyncpg.Connection, who: Principal, operator_id: str, name: str, roles: str, password: str
) -> str | None:
    """Add an operator; the generated password when ``password`` is blank (shown once), else None."""
    who.require("admin")
    new_id = _checked(operator_id)
    if not name.strip():
        raise Refused("the name must not be blank")
    try:
        role_list = check_roles(roles)
    except OperatorError as exc:
        raise Refused(str(exc)) from None
    password_hash, shown = _password(password)
    try:
        await store.add_operator(conn, new_id, name.strip(), role_list, password_hash)
    except asyncpg.UniqueViolationError:
        raise Refused(f"operator {new_id} exists already") from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    return shown


async def set_active(
    conn: asyncpg.Connection, who: Principal, operator_id: str, active: bool, reason: str
) -> None:
    """Enable or disable an operator with a reason (audited by the database)."""
    who.require("admin")
    target = _checked(operator_id)
    if not reason.strip():
        raise Refused("a reason is required")
    try:
        found = await store.set_active(conn, target, active, reason.strip())
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    except asyncpg.RaiseError as exc:
        raise Refused(str(exc)) from None
    if not found:
        raise Refused(f"no operator {target}")


async def reset_password(
    conn: asyncpg.Connection, who: Principal, operator_id: str, password: str
) -> str | None:
    """Set another operator's password (admin); the generated one when ``password`` is blank."""
    who.require("admin")
    target = _checked(operator_id)
    password_hash, shown = _password(password)
    try:
        found = await store.set_password(conn, target, password_hash)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    if not found:
        raise Refused(f"no operator {target}")
    return shown
