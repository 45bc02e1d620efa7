"""Who a request acts for: the session cookie (a random id; the database keeps its digest) or an
``Authorization: Bearer`` sign-in token, resolved by binding a pooled desk connection to the operator,
and the CSRF token tied to the session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from headend.operators import token_digest
from headend.store import api_tokens, web_sessions

SESSION_COOKIE = "headend_session"
SIGNIN_COOKIE = "headend_signin"  # double-submit value of the sign-in form
LANG_COOKIE = "headend_lang"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class NotSignedIn(Exception):
    """No valid session or token; the message says why."""


class Forbidden(Exception):
    """The signed-in operator may not do this; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The operator a request acts for; ``csrf`` is None for a bearer token (no ambient cookie);
    ``scopes`` are a scoped API token's (None: a session or an unscoped token, limited by roles only)."""

    operator_id: str
    roles: tuple[str, ...]
    csrf: str | None
    scopes: tuple[str, ...] | None = None

    def holds(self, role: str) -> bool:
        return role in self.roles

    def require(self, role: str) -> None:
        """Forbidden unless the operator (or the token) holds ``role``."""
        if role not in self.roles:
            raise Forbidden(f"operator {self.operator_id} does not hold the {role} role")

    def require_scope(self, scope: str) -> None:
        """Forbidden unless the request's token carries ``scope`` (a session or an unscoped token may
        do what its roles allow)."""
        if self.scopes is not None and scope not in self.scopes:
            raise Forbidden(
                f"the token does not carry the {scope} scope (it carries {', '.join(self.scopes)})"
            )

    def check_csrf(self, sent: str | None) -> None:
        """Forbidden unless a cookie-signed request carries its session's CSRF token."""
        if self.csrf is not None and not hmac.compare_digest(self.csrf, sent or ""):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def new_session_id() -> str:
    """A new session id for the cookie: 256 random bits."""
    return secrets.token_urlsafe(32)


def digest(session_id: str) -> str:
    """What the database keeps of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: derived from the secret id, so it is tied to the session and stateless."""
    return hashlib.sha256(b"headend-csrf\0" + session_id.encode()).hexdigest()


async def resolve(conn: asyncpg.Connection, cookie: str | None, authorization: str | None) -> Principal:
    """Bind ``conn`` to the request's operator (bearer token first, else the session cookie)."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        token = await api_tokens.sign_in_api(conn, token_digest(credential))
        if token.refused is not None or token.operator_id is None:
            raise NotSignedIn(token.refused or "not signed in")
        return Principal(token.operator_id, token.roles, None, token.scopes)
    if not cookie:
        raise NotSignedIn("not signed in")
    binding = await web_sessions.sign_in_web(conn, digest(cookie))
    if binding.refused is not None or binding.operator_id is None:
        raise NotSignedIn(binding.refused or "not signed in")
    return Principal(binding.operator_id, binding.roles, csrf_token(cookie))


@asynccontextmanager
async def unbound_after(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """``conn``, unbound from any operator when the block ends (before it returns to the pool)."""
    try:
        yield conn
    finally:
        if not conn.is_closed():
            await web_sessions.sign_out(conn)
