"""The dial-in front end: a TCP listener that binds inbound connections to channels by identity, never by IP.

Each accepted connection (:class:`Inbound`) first identifies itself with its kind's strategy
(:mod:`headend.transport.identify`); then the :class:`~headend.transport.hub.DialinHub` binds it
to the channel with that identity (or holds or refuses it). From then on every received chunk
passes the kind's keep-alive filter and the rest goes to the receiving end of the dial-in channel
using the connection (a clean byte stream, as from a serial server).

Closed, counted and logged: a source address outside the listener's ``allow`` networks; more
connections than the listener's cap; a connection still identifying when ``max_per_address`` others
from its source address are identifying too (the oldest of them is closed, so idle connections from
a carrier NAT cannot keep a real device out; identified connections do not count against the cap);
a TLS client certificate whose common name is not the identity it sends;
no identification within ``identify_timeout_s``; more than ``max_bytes_before_id`` bytes before
identifying; a malformed identification; nothing received (not even a heartbeat) for
``silent_timeout_s`` (half-open sockets); end of stream from the peer. One timer per listener
sweeps its connections for the timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from time import monotonic
from typing import Literal, Protocol

from headend.transport.hub import DialinHub, Network, address_in
from headend.transport.identify import (
    KINDS,
    Identifier,
    IdentifyError,
    KeepAliveFilter,
    RegistrationFormat,
)

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
RECHECK_S = 60.0  # an identity check that could not decide is tried again after this long
State = Literal["identifying", "bound", "held", "closed"]
ConflictPolicy = Literal["keep", "replace"]
TRANSITIONS: dict[State, frozenset[State]] = {
    "identifying": frozenset({"bound", "held", "closed"}),
    "held": frozenset({"bound", "closed"}),  # an identity the inventory now expects is adopted
    "bound": frozenset({"closed"}),
    "closed": frozenset(),
}
"""The states a connection may move to from each state; :meth:`Inbound.move_to` refuses the rest."""


class StateError(RuntimeError):
    """A connection was asked to move to a state its current one does not allow."""


class Receiver(Protocol):
    """The receiving end a channel attaches to a bound connection (a dial-in channel's ``_Link``, or
    the stream a concentrator link reads)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def moved(self) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One listening address and how devices on it identify themselves."""

    host: str = "127.0.0.1"
    port: int = 0
    kind: str = "dtu"
    registration: RegistrationFormat = field(default_factory=RegistrationFormat)
    heartbeat: bytes = b""
    identify_timeout_s: float = 30.0
    max_bytes_before_id: int = 256
    silent_timeout_s: float = 300.0
    max_connections: int = 10_000
    max_per_address: int = 100  # connections still identifying, per source address
    allow: tuple[Network, ...] = ()  # source networks accepted (empty: any)
    conflict: ConflictPolicy = "keep"  # a second connection with a connected identity (see hub)
    replace_silent_after_s: float = 120.0  # an established connection silent this long is replaced
    tls: ssl.SSLContext | None = None  # TLS with client certificates: the CN must be the identity

    def identifier(self) -> Identifier:
        """The kind's identification strategy (one per listener: it holds no connection state)."""
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown listener kind {self.kind!r}; known: {', '.join(KINDS)}")
        return kind.identifier(self.registration)

    def keepalive_filter(self) -> KeepAliveFilter:
        """A fresh keep-alive filter for one connection."""
        return KINDS[self.kind].keepalive_filter(self.heartbeat)


class Inbound(asyncio.Protocol):
    """One accepted connection: identifying, then bound (or held) until closed."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.hub = listener.hub
        self.kind = listener.spec.kind
        self.listener_label = listener.label
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"
        self.identity: str | None = None
        self._state: State = "identifying"
        self.connected_at = time.monotonic()
        self.last_rx = self.connected_at
        self.unanswered = False  # a request went out and nothing came back (see ``missed``)
        self.verified = False  # the meters behind it proved to be the inventory's (no password before)
        self.checked_at: float | None = None  # when an identity check last could not decide
        self.undecided: str | None = None  # why no check could verify it (said once)
        self.certificate_name: str | None = None  # the TLS client certificate's common name
        self.close_reason = ""
        self._buffer = b""
        self._filter = listener.spec.keepalive_filter()
        answerer = KINDS[self.kind].answerer
        self._answerer = answerer() if answerer is not None else None
        self.identification = b""  # the bytes the device identified itself with (a 1376.1 login frame)
        self.link: Receiver | None = None  # the receiving end of the channel using this connection

    @property
    def state(self) -> State:
        """Where the connection is: identifying, bound (to a channel's device), held, or closed."""
        return self._state

    def move_to(self, state: State) -> None:
        """Move to ``state`` if :data:`TRANSITIONS` allows it from the current one, else StateError."""
        if state not in TRANSITIONS[self._state]:
            raise StateError(f"{self.peer}: a connection {self._state} cannot become {state}")
        self._state = state

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def heartbeats(self) -> int:
        """Keep-alives seen while no link had the connection (a link counts its own)."""
        return self._filter.keepalives + (self._answerer.heartbeats if self._answerer else 0)

    def alive(self, now: float) -> bool:
        """Whether this established connection still answers: it is open, received something (a
        reply, a heartbeat) within ``replace_silent_after_s`` and left no request unanswered since."""
        if self.closed or self.unanswered:
            return False
        return now - self.last_rx < self.listener.spec.replace_silent_after_s

    def answering(self, now: float) -> bool:
        """Whether this established connection keeps its device against a newer one here (the
        listener's conflict policy ``keep`` and :meth:`alive`)."""
        return self.listener.spec.conflict != "replace" and self.alive(now)

    def verification_due(self, now: float) -> bool:
        """Whether the meters behind this open connection should be checked now: never verified, and
        no undecided check within ``RECHECK_S``."""
        if self.closed or self.verified:
            return False
        return self.checked_at is None or now - self.checked_at >= RECHECK_S

    def missed(self) -> None:
        """A channel's request on this connection got no byte back: it no longer keeps its device
        against a newer connection (until it sends something again)."""
        self.unanswered = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0]) if peer else "?"
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.certificate_name = _common_name(transport.get_extra_info("peercert"))
        self.listener.accepted(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = monotonic()
        self.unanswered = False
        beats = self.heartbeats
        if self.state == "identifying":
            self._identify(self._filter.feed(data, True))
        elif self.state == "bound":
            self._forward(data)
        elif self.state == "held":
            self._answer(self._filter.feed(data, True))
        if self.heartbeats != beats:
            self.hub.counts["heartbeats"] += self.heartbeats - beats
            self.hub.notify("heartbeat", self)

    def _identify(self, clean: bytes) -> None:
        spec = self.listener.spec
        self._buffer += clean
        if not self._buffer:
            return
        try:
            found = self.listener.identifier.identify(self._buffer)
        except IdentifyError as exc:
            self.listener.reject(self, "malformed_id", str(exc))
            return
        if found is None:
            if len(self._buffer) > spec.max_bytes_before_id:
                self.listener.reject(
                    self, "too_many_bytes", f"{len(self._buffer)} bytes without an identification"
                )
            return
        if spec.tls is not None and found.identity != self.certificate_name:
            self.listener.reject(
                self, "certificate_mismatch", f"certificate {self.certificate_name!r} sent {found.identity!r}"
            )
            return
        self.identification = self._buffer[: found.consumed]
        rest, self._buffer = self._buffer[found.consumed :], b""
        self.identity = found.identity
        self.listener.identified(self)
        if not self.hub.bind(self, found.identity):  # the hub moves it to bound or held
            self.close("refused_unknown")
            return
        acknowledge = KINDS[self.kind].acknowledge
        untaken = self.state == "held" or (self.state == "bound" and self.link is None)
        if acknowledge is not None and untaken and self.transport:
            self.transport.write(acknowledge(self.identification))
        if rest and self.state == "bound":
            self._forward(rest)
        elif rest and self.state == "held":
            self._answer(rest)

    def _forward(self, data: bytes) -> None:
        clean = self._filter.feed(data, False)
        if not clean:
            return
        link = self.link
        if link is None:
            if not self._answer(clean):
                self.hub.counts["unsolicited_bytes"] += len(clean)  # no channel is using the connection
            return
        link.data_received(clean)

    def _answer(self, clean: bytes) -> bool:
        """Confirm a concentrator's link tests while no link has the connection; False for kinds
        without an answerer (the bytes are not understood here)."""
        if self._answerer is None:
            return False
        reply = self._answerer.feed(clean)
        if reply and self.transport is not None:
            self.transport.write(reply)
        return True

    def attach(self, link: Receiver) -> None:
        """A dial-in channel starts using this connection."""
        assert self.transport is not None
        self.link = link
        link.connection_made(self.transport)

    def detach(self, link: Receiver) -> None:
        """The channel stops using this connection (the connection stays up)."""
        if self.link is link:
            self.link = None

    def eof_received(self) -> bool:
        self.close_reason = self.close_reason or "closed_by_peer"
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        previous = self._state
        if previous != "closed":
            self.move_to("closed")
        reason = self.close_reason or ("closed_by_peer" if exc is None else "reset")
        self.close_reason = reason
        link, self.link = self.link, None
        if link is not None:
            if reason == "replaced":
                link.moved()  # the exchange in flight is sent again on the newer connection
            link.connection_lost(exc)
        self.hub.lost(self)
        self.listener.released(self, previous, reason)

    def pause_writing(self) -> None:
        if self.link is not None:
            self.link.pause_writing()

    def resume_writing(self) -> None:
        if self.link is not None:
            self.link.resume_writing()

    def close(self, reason: str) -> None:
        """Close this connection, recording why (counted when it is gone)."""
        if self.state == "closed":
            return
        self.close_reason = self.close_reason or reason
        if self.transport is not None:
            self.transport.close()


def _common_name(certificate: object) -> str | None:
    """The subject common name of a peer certificate as ``ssl`` decodes it (None without one)."""
    if not isinstance(certificate, dict):
        return None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class Listener:
    """An asyncio server for one :class:`ListenerSpec` (``start`` / ``stop``)."""

    def __init__(self, spec: ListenerSpec, hub: DialinHub) -> None:
        self.spec = spec
        self.hub = hub
        self.identifier = spec.identifier()
        self.connections: set[Inbound] = set()
        self.identifying: dict[str, dict[Inbound, None]] = {}  # per source address, oldest first
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._logged_at: dict[str, float] = {}
        self.port = spec.port

    @property
    def label(self) -> str:
        return f"{self.spec.kind}@{self.spec.host}:{self.port}"

    async def start(self) -> Listener:
        """Bind and listen (port 0 picks a free port, see :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Inbound(self),
            self.spec.host,
            self.spec.port,
            backlog=4096,
            ssl=self.spec.tls,
            ssl_handshake_timeout=self.spec.identify_timeout_s if self.spec.tls is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(self._sweep_every(), self._sweep)
        log.info("listening", extra={"listener": self.label})
        return self

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for inbound in list(self.connections):
            inbound.close("shutdown")
        if self._server is not None:
            await self._server.wait_closed()

    def _sweep_every(self) -> float:
        spec = self.spec
        return max(0.05, min(1.0, spec.identify_timeout_s / 4, spec.silent_timeout_s / 4))

    def _sweep(self) -> None:
        now = time.monotonic()
        spec = self.spec
        for inbound in list(self.connections):
            if inbound.state == "identifying" and now - inbound.connected_at > spec.identify_timeout_s:
                self.reject(
                    inbound, "identify_timeout", f"no identification in {spec.identify_timeout_s:g} s"
                )
            elif now - inbound.last_rx > spec.silent_timeout_s:
                inbound.close("silent_timeout")
        if len(self._logged_at) > 1000:  # forget entries whose message is due again anyway
            self._logged_at = {k: t for k, t in self._logged_at.items() if now - t < LOG_EVERY_S}
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every(), self._sweep)

    def accepted(self, inbound: Inbound) -> None:
        """A new connection: enforce the source networks and the caps."""
        counts = self.hub.counts
        if self.spec.allow and not address_in(inbound.host, self.spec.allow):
            self._refuse_cap(inbound, "refused_source", inbound.host)
            return
        if len(self.connections) >= self.spec.max_connections:
            self._refuse_cap(inbound, "cap_listener", self.label)
            return
        waiting = self.identifying.setdefault(inbound.host, {})
        if len(waiting) >= self.spec.max_per_address:
            oldest = next(iter(waiting))
            self._forget_identifying(oldest)
            counts["cap_address"] += 1
            self._log_once(inbound.host, "dial-in connection closed: too many identifying", oldest)
            oldest.close("cap_address")
            waiting = self.identifying.setdefault(inbound.host, {})
        counts["accepted"] += 1
        self.connections.add(inbound)
        waiting[inbound] = None

    def identified(self, inbound: Inbound) -> None:
        """``inbound`` identified itself: it no longer counts against its address's cap."""
        self._forget_identifying(inbound)

    def _forget_identifying(self, inbound: Inbound) -> None:
        waiting = self.identifying.get(inbound.host)
        if waiting is None:
            return
        waiting.pop(inbound, None)
        if not waiting:
            del self.identifying[inbound.host]

    def _log_once(self, key: str, message: str, inbound: Inbound) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[key] = now
            log.warning(message, extra={"listener": self.label, "peer": inbound.peer})

    def _refuse_cap(self, inbound: Inbound, reason: str, key: str) -> None:
        self.hub.counts[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(f"{key} {reason}", -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[f"{key} {reason}"] = now
            log.warning(
                "dial-in connection refused",
                extra={"listener": self.label, "peer": inbound.peer, "reason": reason},
            )
        inbound.move_to("closed")
        inbound.close_reason = reason
        if inbound.transport is not None:
            inbound.transport.abort()

    def reject(self, inbound: Inbound, reason: str, detail: str) -> None:
        """Close a connection that failed to identify itself (counted; logged once a minute per
        source address and reason, so a flood cannot flood the log)."""
        key = f"{inbound.host} {reason}"
        now = time.monotonic()
        if now - self._logged_at.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged_at[key] = now
            log.info(
                "dial-in connection rejected",
                extra={"listener": self.label, "peer": inbound.peer, "reason": reason, "detail": detail},
            )
        inbound.close(reason)

    def released(self, inbound: Inbound, previous: State, reason: str) -> None:
        """A connection is gone: count why, give back its cap slots."""
        if inbound not in self.connections:
            return
        self.connections.discard(inbound)
        self._forget_identifying(inbound)
        self.hub.counts[f"closed_{reason}"] += 1
        if previous != "identifying":
            self.hub.notify("closed", inbound)


__all__ = ["Inbound", "Listener", "ListenerSpec", "Receiver"]
