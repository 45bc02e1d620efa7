"""``headend web``: the web console and its JSON API (FastAPI, served by uvicorn; imported only here,
so that other commands start without them)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import TYPE_CHECKING, Annotated

import asyncpg
import typer

from headend.commands.common import ConfigPath, chosen_config, fail

if TYPE_CHECKING:
    from fastapi import FastAPI

DESK_ENV = "HEADEND_WEB_DESK_DSN"
REPORT_ENV = "HEADEND_WEB_REPORT_DSN"


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen must be host:port, got {listen[:60]!r}")
    return host, int(port)


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _check_logins(desk_dsn: str, report_dsn: str) -> str | None:
    """Why the two logins may not run the console, or None: the desk login must be in
    ``headend_billing``, the reporting login in ``headend_reporting``, neither the schema owner, a
    superuser or the daemon's."""
    from headend.store.web_sessions import login_kind

    for dsn, group, what in (
        (desk_dsn, "desk", "[web] desk_dsn"),
        (report_dsn, "reporting", "[web] report_dsn"),
    ):
        conn = await asyncpg.connect(dsn)
        try:
            kind = await login_kind(conn)
        finally:
            await conn.close()
        if kind.superuser or kind.owner:
            return f"{what}: login {kind.user} is a superuser or owns the schema; use the {group} login"
        if kind.daemon:
            return f"{what}: login {kind.user} is the daemon's; use the {group} login"
        if not getattr(kind, group):
            needed = "headend_billing" if group == "desk" else "headend_reporting"
            return f"{what}: login {kind.user} is not in {needed}"
    return None


def register(app: typer.Typer) -> None:
    """Attach ``headend web``."""

    @app.command("web")
    def web(
        listen: Annotated[str, typer.Option("--listen", help="host:port to serve on.")] = "127.0.0.1:8080",
        allow_remote: Annotated[
            bool,
            typer.Option(
                "--allow-remote",
                help="Serve on a non-loopback address (behind a TLS reverse proxy: docs/operations.md).",
            ),
        ] = False,
        workers: Annotated[
            int,
            typer.Option(
                "--workers",
                min=1,
                max=64,
                help="Processes serving the one listening socket (each with its own pools of pool_size).",
            ),
        ] = 1,
        config: ConfigPath = None,
    ) -> None:
        """The web console and its JSON API (OpenAPI at /api/openapi.json): overview, meters,
        commands; sign-in with operator id and password.

        Connects with the desk login ([web] desk_dsn, or $HEADEND_WEB_DESK_DSN) for writes, each bound to
        the signed-in operator, and the reporting login ([web] report_dsn, or $HEADEND_WEB_REPORT_DSN) for
        reads; never with the schema owner's or the daemon's. ``--workers N`` serves the listening
        socket from N processes (the console is stateless: any of them serves any request)."""
        settings = chosen_config(config).web
        host, port = _host_port(listen)
        if not _is_local(host) and not allow_remote:
            fail(f"--listen {listen}: not a loopback address; add --allow-remote to serve other machines")
        desk_dsn = settings.desk_dsn or os.environ.get(DESK_ENV, "")
        report_dsn = settings.report_dsn or os.environ.get(REPORT_ENV, "")
        if not desk_dsn or not report_dsn:
            fail(f"the console needs [web] desk_dsn and report_dsn (or ${DESK_ENV} and ${REPORT_ENV})")
        why = asyncio.run(_check_logins(desk_dsn, report_dsn))
        if why is not None:
            fail(why)

        import uvicorn

        from headend.web.app import WORKER_ENV, create_app

        typer.echo(f"headend web: http://{listen}/ (API /api/openapi.json)")
        application: FastAPI | str
        if workers == 1:
            application = create_app(settings, desk_dsn, report_dsn)
        else:
            # each worker is a fresh interpreter (spawned) that builds the application from these
            # settings; the console keeps no state in a process (sessions and sign-in tokens are in the
            # database, the sign-in form's value in a cookie), so any worker serves any request
            resolved = settings.model_copy(update={"desk_dsn": desk_dsn, "report_dsn": report_dsn})
            os.environ[WORKER_ENV] = resolved.model_dump_json()
            application = "headend.web.app:worker_app"
        uvicorn.run(
            application,
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            proxy_headers=False,
            server_header=False,
        )
