"""Who acts: operator ids (工号), roles, argon2id password hashes and authenticating a connection.

A human actor is an operator id of 1 to 8 digits (it is also the operator code a meter records). The
password is hashed with argon2id (argon2-cffi); to act, a connection proves it knows the password by
sending the hash derived with the stored salt and parameters to ``headend_sign_in`` (migrations
0008, 0015), which binds the connection to the operator (five wrong passwords in a row lock the
operator for 15 minutes). The database then refuses rows written under any
other human actor on that connection. Automation acts as ``system``, a machine actor only the
daemon's database login may write (and never an operator id, which is all digits).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.low_level import Type, hash_secret

from headend.store import operators as store

ROLES = ("viewer", "operator", "approver", "cashier", "admin")
_ID = re.compile(r"[0-9]{1,8}")
_PARAMS = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)")
_HASH_LEN = 32
MIN_PASSWORD = 8


class OperatorError(ValueError):
    """An operator id, role, password or authentication that is refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator authenticated on one connection."""

    id: str
    roles: tuple[str, ...]


def check_operator_id(text: str | None) -> str:
    """The operator id (工号): 1 to 8 digits; blank, empty and non-numeric ids are refused."""
    value = (text or "").strip()
    if not value:
        raise OperatorError("an operator id (工号, 1-8 digits) is required")
    if not _ID.fullmatch(value):
        raise OperatorError(f"operator id {text!r} must be 1-8 digits (the 工号 the meter records)")
    return value


def check_roles(text: str) -> list[str]:
    """Comma-separated roles, each one of ``ROLES``."""
    roles = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise OperatorError(f"roles must be a comma-separated subset of {', '.join(ROLES)}, got {text!r}")
    return list(dict.fromkeys(roles))


def hash_password(password: str) -> str:
    """A new argon2id hash (PHC string, random salt) of a password of at least ``MIN_PASSWORD`` chars."""
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD} characters")
    return PasswordHasher(hash_len=_HASH_LEN).hash(password)


def proof(params: str, password: str) -> str:
    """The PHC string of ``password`` under the stored parameters and salt (what authentication compares)."""
    match = _PARAMS.fullmatch(params)
    if match is None:
        raise OperatorError("the stored password hash has an unknown format")
    memory, time, parallel, salt = match.groups()
    raw_salt = base64.b64decode(salt + "=" * (-len(salt) % 4))
    encoded = hash_secret(
        password.encode(), raw_salt, int(time), int(memory), int(parallel), _HASH_LEN, Type.ID
    )
    return encoded.decode()


async def authenticate(
    conn: asyncpg.Connection, operator_id: str, password: str, role: str | None
) -> Operator:
    """Bind ``conn`` to the operator if the password is right, the operator active and holding ``role``
    (any role when None)."""
    operator_id = check_operator_id(operator_id)
    params = await store.password_params(conn, operator_id)
    refused = OperatorError(f"operator {operator_id}: unknown, disabled or wrong password")
    if params is None:
        raise refused
    roles, why = await store.sign_in(conn, operator_id, proof(params, password))
    if why is not None:
        raise OperatorError(f"operator {operator_id}: {why}")
    if role is not None and role not in roles:
        held = ", ".join(roles)
        raise OperatorError(f"operator {operator_id} does not hold the {role} role (holds {held})")
    return Operator(operator_id, tuple(roles))


def new_token() -> str:
    """A new sign-in token for scripts: 256 random bits, URL-safe text (shown once, stored as a digest)."""
    return "hdt_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores and compares for a token: its SHA-256, hex."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


async def authenticate_token(
    conn: asyncpg.Connection, operator_id: str, token: str, role: str | None
) -> Operator:
    """Bind ``conn`` to the operator a valid token belongs to, acting with the token's roles, which must
    include ``role`` (any when None)."""
    operator_id = check_operator_id(operator_id)
    roles, why = await store.sign_in_token(conn, operator_id, token_digest(token))
    if why is not None:
        raise OperatorError(f"operator {operator_id}: {why}")
    if role is not None and role not in roles:
        held = ", ".join(roles) or "none the operator still holds"
        raise OperatorError(f"the token of operator {operator_id} does not carry the {role} role ({held})")
    return Operator(operator_id, tuple(roles))


# What an API token may be scoped to, and the role each scope's writes need (None: a read).
SCOPES: dict[str, str | None] = {
    "readings:read": None,
    "commands:read": None,
    "payments:write": "cashier",
    "commands:write": "operator",
}


def check_scopes(texts: list[str]) -> list[str]:
    """Scopes, each one of ``SCOPES`` (comma-separated or one per item), without repeats, sorted."""
    scopes = sorted({s.strip() for text in texts for s in text.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        given = ", ".join(unknown) or "none"
        raise OperatorError(f"scopes must be a subset of {', '.join(SCOPES)}, got {given}")
    return scopes
