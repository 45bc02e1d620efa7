"""The console's ASGI application: pools, security headers, error pages, and the routes of
``pages`` (HTML) and ``api`` (JSON, documented at /api/openapi.json)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from headend.config import WebConfig
from headend.web import data, i18n
from headend.web.actions import Refused
from headend.web.data import BadRequest, NotFound
from headend.web.flight import SingleFlight
from headend.web.identity import LANG_COOKIE, SESSION_COOKIE, Forbidden, NotSignedIn, Principal

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Console:
    """What every request uses: the settings, the desk and reporting pools, the templates, and the
    overview being read (if any)."""

    config: WebConfig
    desk: asyncpg.Pool
    report: asyncpg.Pool
    templates: Jinja2Templates
    zone: ZoneInfo
    overviews: SingleFlight[date, data.Row]

    async def overview(self) -> data.Row:
        """Today's overview (``data.overview``), read on a reporting connection of its own. The
        requests that ask while it is being read share that reading (it is the same for every user: the
        station's day and zone, no per-user filter; each renders it in its own language), so its
        figures are at most one reading's duration older than the request; one arriving after it
        finished reads anew. Shared between requests: read it, never change it."""
        today = datetime.now(self.zone).date()

        async def read() -> data.Row:
            async with self.report.acquire() as conn:
                return await data.overview(conn, self.zone, today)

        return await self.overviews.run(today, read)

    def local(self, value: object) -> str:
        """A time in the station's zone, to the second; other values as text; None as empty."""
        if value is None:
            return ""
        if isinstance(value, datetime):
            return value.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")
        return str(value)

    def page(
        self,
        request: Request,
        name: str,
        who: Principal | None,
        context: Mapping[str, object] | None = None,
        status: int = 200,
    ) -> Response:
        """Render template ``name`` in the browser's language."""
        language = i18n.chosen(request.cookies.get(LANG_COOKIE))
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "t": i18n.translator(language),
                "lang": language,
                "who": who,
                "local": self.local,
                "path": request.url.path,
                **(context or {}),
            },
            status_code=status,
        )


def console_of(request: Request) -> Console:
    """The console state of the running application."""
    state: Console = request.app.state.console
    return state


async def _reads_only(conn: asyncpg.Connection) -> None:
    """A reporting connection goes back to the pool as it is: asyncpg rolls back an open transaction
    first, and the reads leave no other session state (no session settings, cursors outside a
    transaction, listeners or advisory locks), so the default reset query would only cost a round
    trip per request."""


def _templates() -> jinja2.Environment:
    """The pages' templates, escaped as Starlette's default environment escapes them; read once (they
    ship with the package), not checked for changes at every render."""
    loader = jinja2.FileSystemLoader(HERE / "templates")
    return jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(), auto_reload=False)


WORKER_ENV = "HEADEND_WEB_WORKER"
"""The settings of a ``headend web --workers`` process (``WebConfig`` as JSON, its DSNs resolved), left
by the parent process in the environment its workers inherit."""


def worker_app() -> FastAPI:
    """The application of one ``headend web --workers`` process, from ``$HEADEND_WEB_WORKER``."""
    config = WebConfig.model_validate_json(os.environ[WORKER_ENV])
    return create_app(config, config.desk_dsn, config.report_dsn)


def create_app(config: WebConfig, desk_dsn: str, report_dsn: str) -> FastAPI:
    """The application; its pools open on startup and close on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = {"jit": "off", "application_name": "headend web"}
        desk = await asyncpg.create_pool(
            desk_dsn, min_size=1, max_size=config.pool_size, server_settings=settings
        )
        # the reads plan once per pooled connection (a prepared statement's generic plan): planning a
        # query over a year of TimescaleDB chunks costs more than running it (bench/console.py)
        generic = {**settings, "plan_cache_mode": "force_generic_plan"}
        report = await asyncpg.create_pool(
            report_dsn, min_size=1, max_size=config.pool_size, server_settings=generic, reset=_reads_only
        )
        templates = Jinja2Templates(env=_templates())
        app.state.console = Console(
            config, desk, report, templates, ZoneInfo(config.timezone), SingleFlight()
        )
        try:
            yield
        finally:
            await desk.close()
            await report.close()

    app = FastAPI(
        title="headend console API",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["cache-control"] = "no-store"
        return response

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def refusal(request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": message}, status_code=status)
        context = {"code": status, "message": message}
        return console_of(request).page(request, "error.html", None, context, status)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=401, headers={"www-authenticate": "Bearer"})
        response = RedirectResponse("/signin", status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return refusal(request, 403, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return refusal(request, 404, str(exc))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return refusal(request, 400, str(exc))

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return refusal(request, 409, str(exc))

    from headend.web import api, billing_routes, campaign_routes, export_routes, integration, pages, tokens

    app.include_router(tokens.pages)
    app.include_router(pages.router)
    app.include_router(tokens.api)
    app.include_router(integration.router)
    app.include_router(api.router)
    app.include_router(billing_routes.pages)
    app.include_router(billing_routes.api)
    app.include_router(campaign_routes.pages)
    app.include_router(campaign_routes.api)
    app.include_router(export_routes.router)
    return app
