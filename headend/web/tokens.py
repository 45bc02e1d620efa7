"""Routes of API-token administration (admin role): the tokens page beside the operators page, and
the same as JSON under ``/api/tokens``; every write carries the session's CSRF token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Header, Path, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from headend.operators import SCOPES
from headend.web import token_admin
from headend.web.deps import Signed
from headend.web.identity import CSRF_FIELD, CSRF_HEADER

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api")
TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Csrf = Annotated[str, Form(alias=CSRF_FIELD)]
CsrfHeader = Annotated[str | None, Header(alias=CSRF_HEADER)]
Scope = Annotated[str, Field(pattern="^[a-z]+:[a-z]+$", max_length=40)]


async def _page(request: Request, me: Signed, secret: tuple[int, str] | None = None) -> Response:
    listed = await token_admin.tokens(me.conn, me.who)
    context = {"tokens": listed, "secret": secret, "scopes": list(SCOPES)}
    return me.console.page(request, "operator_tokens.html", me.who, context)


@pages.get("/operators/tokens")
async def tokens_page(request: Request, me: Signed) -> Response:
    return await _page(request, me)


@pages.post("/operators/tokens")
async def create_form(
    request: Request,
    me: Signed,
    operator: Annotated[str, Form(max_length=20)],
    label: Annotated[str, Form(max_length=200)],
    scope: Annotated[list[str], Form(max_length=len(SCOPES))] = [],  # noqa: B006 - FastAPI copies it
    days: Annotated[int, Form(ge=1, le=token_admin.MAX_DAYS)] = 90,
    csrf: Csrf = "",
) -> Response:
    me.who.check_csrf(csrf)
    secret = await token_admin.create(me.conn, me.who, operator, label, scope, days)
    return await _page(request, me, secret)


@pages.post("/operators/tokens/{token_id}/revoke")
async def revoke_form(
    token_id: TokenId, me: Signed, reason: Annotated[str, Form(max_length=500)] = "", csrf: Csrf = ""
) -> Response:
    me.who.check_csrf(csrf)
    await token_admin.revoke(me.conn, me.who, token_id, reason)
    return RedirectResponse("/operators/tokens", status_code=303)


class TokenListed(BaseModel):
    """A token as listed: never its secret or its digest. ``scopes`` is null for a sign-in token."""

    id: int
    operator_id: str
    label: str
    roles: list[str]
    scopes: list[str] | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewToken(BaseModel):
    """A scoped API token to make for an operator."""

    operator: str = Field(min_length=1, max_length=8, description="The operator (工号) it acts as.")
    label: str = Field(min_length=1, max_length=200, description="Its name, e.g. 'CIS nightly import'.")
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES), description=", ".join(SCOPES))
    days: int = Field(90, ge=1, le=token_admin.MAX_DAYS, description="How many days it is valid.")


class TokenMade(BaseModel):
    """The token made: its number and its secret, returned this once (only a digest is kept)."""

    id: int
    token: str


class Revocation(BaseModel):
    """Why a token is revoked (audited)."""

    reason: str = Field(min_length=1, max_length=500)


class Revoked(BaseModel):
    """The token revoked."""

    id: int
    revoked: bool


@api.get("/tokens", response_model=list[TokenListed])
async def list_tokens(signed: Signed) -> list[TokenListed]:
    """Every operator's tokens (admin role)."""
    found = await token_admin.tokens(signed.conn, signed.who)
    return [TokenListed(**{name: getattr(r, name) for name in r.__slots__}) for r in found]


@api.post("/tokens", response_model=TokenMade, status_code=201)
async def create_token(body: NewToken, signed: Signed, csrf: CsrfHeader = None) -> TokenMade:
    """Make a scoped API token for an operator (admin role): its roles are the ones its scopes need,
    which the operator must hold."""
    signed.who.check_csrf(csrf)
    token_id, secret = await token_admin.create(
        signed.conn, signed.who, body.operator, body.label, list(body.scopes), body.days
    )
    return TokenMade(id=token_id, token=secret)


@api.post("/tokens/{token_id}/revoke", response_model=Revoked)
async def revoke_token(
    token_id: TokenId, body: Revocation, signed: Signed, csrf: CsrfHeader = None
) -> Revoked:
    """Revoke a token at once (admin role)."""
    signed.who.check_csrf(csrf)
    await token_admin.revoke(signed.conn, signed.who, token_id, body.reason)
    return Revoked(id=token_id, revoked=True)
