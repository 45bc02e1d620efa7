"""Operator sign-in for CLI writes: the id from ``--operator``, the password prompted (hidden) or taken
from ``$HEADEND_OPERATOR_PASSWORD`` for scripts; never echoed or logged."""

from __future__ import annotations

import os

import asyncpg
import typer

from headend.operators import Operator, OperatorError, authenticate, check_operator_id

PASSWORD_ENV = "HEADEND_OPERATOR_PASSWORD"
OperatorOption = typer.Option(
    ..., "--operator", help=f"Your operator id (工号); password prompted, or ${PASSWORD_ENV} for scripts."
)


class Login:
    """An operator id and password read from the command line, before any connection is opened."""

    __slots__ = ("operator_id", "password")

    def __init__(self, operator_id: str, password: str) -> None:
        self.operator_id = operator_id
        self.password = password

    def __repr__(self) -> str:
        return f"Login({self.operator_id!r}, password=******)"

    async def sign_in(self, conn: asyncpg.Connection, role: str | None) -> Operator:
        """Authenticate ``conn`` as this operator holding ``role`` (any role when None; ``OperatorError``
        if refused)."""
        return await authenticate(conn, self.operator_id, self.password, role)


def login(operator: str | None) -> Login:
    """Check the operator id and get the password; a bad id is one error line and exit code 1."""
    try:
        operator_id = check_operator_id(operator)
    except OperatorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = typer.prompt(f"password of operator {operator_id}", hide_input=True)
    return Login(operator_id, password)
