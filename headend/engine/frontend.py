"""The daemon's dial-in front end: the ``[listen]`` listeners, their hub, and the pending identities' table.

``FrontEnd(config.listen, dsn)`` starts one listener per ``[[listen.listeners]]`` entry around one
:class:`~headend.transport.hub.DialinHub` (handed to the driver port, so ``dtu://`` channels find
their connections) and writes the hub's pending identities and conflicts to ``dialin_pending``
every ``pending_flush`` for ``headend channels pending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import asyncpg

from headend.config import ListenConfig, ListenerConfig, ListenerTlsConfig
from headend.store.dialin import PendingRow, save_pending
from headend.transport.hub import DialinHub
from headend.transport.identify import RegistrationFormat, parse_pattern
from headend.transport.listener import Listener, ListenerSpec
from headend.transport.url import parse_networks

log = logging.getLogger(__name__)


def tls_context(config: ListenerTlsConfig) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by ``client_ca`` (raises OSError
    or ssl.SSLError for unreadable or mismatched files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(config.client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.cert), str(config.key))
    return context


def listener_spec(config: ListenerConfig) -> ListenerSpec:
    """The transport's listener spec for one validated ``[[listen.listeners]]`` entry."""
    host, _, port = config.address.rpartition(":")
    registration = config.registration
    return ListenerSpec(
        host=host.strip("[]"),
        port=int(port),
        kind=config.kind,
        registration=RegistrationFormat(
            registration.encoding,
            registration.length,
            parse_pattern(registration.delimiter),
            parse_pattern(registration.prefix),
        ),
        heartbeat=parse_pattern(config.heartbeat),
        identify_timeout_s=config.identify_timeout,
        max_bytes_before_id=config.max_bytes_before_id,
        silent_timeout_s=config.silent_timeout,
        max_connections=config.max_connections,
        max_per_address=config.max_per_address,
        allow=tuple(n for item in config.allow for n in parse_networks(item)),
        conflict=config.conflict,
        replace_silent_after_s=config.replace_silent_after,
        tls=tls_context(config.tls) if config.tls is not None else None,
    )


class FrontEnd:
    """Listeners + hub + pending-table writer (``start`` / ``stop``)."""

    def __init__(self, config: ListenConfig, dsn: str) -> None:
        self.config = config
        self.dsn = dsn
        self.hub = DialinHub(config.unknown)
        self.listeners = [Listener(listener_spec(c), self.hub) for c in config.listeners]
        self._flusher: asyncio.Task[None] | None = None
        self._saved: dict[tuple[str, str], tuple[int, bool]] = {}

    async def start(self) -> FrontEnd:
        for listener in self.listeners:
            await listener.start()
        self._flusher = asyncio.create_task(self._flush_every(), name="dialin-pending")
        return self

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for listener in self.listeners:
            await listener.stop()
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await self.flush()

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.pending_flush)
            try:
                await self.flush()
            except (OSError, asyncpg.PostgresError) as exc:  # the database is down: next round
                log.warning("pending dial-in identities not saved", extra={"error": str(exc)})

    async def flush(self) -> None:
        """Write the pending identities that changed since the last flush."""
        entries = [*self.hub.pending.values(), *self.hub.conflicts.values()]
        changed = [
            PendingRow(
                p.identity,
                p.kind,
                p.listener,
                p.peer,
                p.first_seen,
                p.last_seen,
                p.attempts,
                p.held,
                p.conflicts,
            )
            for p in entries
            if self._saved.get((p.kind, p.identity)) != (p.attempts, p.held)
        ]
        conn = await asyncpg.connect(self.dsn)
        try:
            await save_pending(conn, changed)
        finally:
            await conn.close()
        for row in changed:
            self._saved[(row.kind, row.identity)] = (row.attempts, row.held)
