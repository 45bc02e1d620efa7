"""Operator sign-in for CLI writes: the id from ``--operator``, then a sign-in token from
``$HEADEND_OPERATOR_TOKEN`` (scripts), else the password from ``$HEADEND_OPERATOR_PASSWORD`` or a
hidden prompt; neither is ever echoed or logged."""

from __future__ import annotations

import os
from typing import Annotated

import asyncpg
import typer

from headend.operators import Operator, OperatorError, authenticate, authenticate_token, check_operator_id

PASSWORD_ENV = "HEADEND_OPERATOR_PASSWORD"
TOKEN_ENV = "HEADEND_OPERATOR_TOKEN"
OperatorId = Annotated[
    str,
    typer.Option(
        "--operator",
        help=f"Your operator id (工号); password prompted, or ${TOKEN_ENV} / ${PASSWORD_ENV} for scripts.",
    ),
]


class Login:
    """An operator id with a password or a token, read before any connection is opened."""

    __slots__ = ("operator_id", "password", "token")

    def __init__(self, operator_id: str, password: str | None = None, token: str | None = None) -> None:
        self.operator_id = operator_id
        self.password = password
        self.token = token

    def __repr__(self) -> str:
        secret = "token=******" if self.token is not None else "password=******"
        return f"Login({self.operator_id!r}, {secret})"

    async def sign_in(self, conn: asyncpg.Connection, role: str | None) -> Operator:
        """Authenticate ``conn`` as this operator holding ``role`` (any role when None; ``OperatorError``
        if refused)."""
        if self.token is not None:
            return await authenticate_token(conn, self.operator_id, self.token, role)
        return await authenticate(conn, self.operator_id, self.password or "", role)


def login(operator: str | None) -> Login:
    """Check the operator id and get the token or password; a bad id is one error line and exit code 1."""
    try:
        operator_id = check_operator_id(operator)
    except OperatorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    token = os.environ.get(TOKEN_ENV)
    if token:
        return Login(operator_id, token=token)
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt(f"password of operator {operator_id}", hide_input=True)
    return Login(operator_id, password=password)
