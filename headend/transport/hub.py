"""Which identified device is connected where: the registry between the listeners and the dial-in channels.

Listeners report identified connections (:meth:`DialinHub.bind`); dial-in channels ask for the
live connection of their device (:meth:`DialinHub.connection`). A device is a :data:`DeviceKey`,
``(listener kind, identity)``: each kind of device (a DTU's registration id, a concentrator's
login address) names itself in its own namespace. A newer connection with the identity of a
device that is already connected is a conflict (an alarm: logged once a minute per device,
counted, shown to the observer, kept in :attr:`DialinHub.conflicts` for ``headend channels
pending``). Under the listener's ``conflict = "keep"`` policy the established connection stays
while it answers and the newcomer is closed; only an established connection that went silent
(nothing received for the listener's ``replace_silent_after``, or a request it left unanswered)
is replaced (closed; its exchange in flight is sent again on the newer one). ``conflict =
"replace"`` always replaces. In a cluster, a connection whose device another member has connected
is the same conflict (:meth:`DialinHub.connected_elsewhere`, whatever the policy). A device whose
channel names source networks (``allow``) is bound only from them. Identities that no channel
expects are refused or held, as configured, and listed in :attr:`DialinHub.pending`. Every outcome
is counted in :attr:`DialinHub.counts`; unknown identities are logged once per identity per hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING, Literal

from headend.transport.channel import ChannelOffline
from headend.transport.trust import TrustBook

if TYPE_CHECKING:
    from headend.transport.listener import Inbound

log = logging.getLogger(__name__)

UnknownPolicy = Literal["refuse", "hold"]
UNKNOWN_LOG_EVERY_S = 3600.0
CONFLICT_LOG_EVERY_S = 60.0
MAX_PENDING = 10_000  # pending identities kept (and logged-at times): beyond it, refused unlisted
DeviceKey = tuple[str, str]  # (listener kind, identity as received)
Network = IPv4Network | IPv6Network
HubEvent = Literal["identified", "replaced", "refused", "held", "heartbeat", "closed", "conflict"]


def address_in(host: str, networks: Iterable[Network]) -> bool:
    """Whether the peer address ``host`` lies in one of ``networks`` (an unparsable host: no)."""
    try:
        address = ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 on a dual-stack socket
    if isinstance(mapped, IPv4Address):
        address = mapped
    return any(address in network for network in networks)


class ChannelUnverified(ChannelOffline):
    """A password-bearing request for a dial-in connection whose meters have not been verified
    (nothing was sent), or a connection that failed the verification (closed)."""


@dataclass(slots=True)
class PendingIdentity:
    """An identity that dialled in without a channel in the inventory."""

    identity: str
    kind: str
    listener: str
    peer: str
    first_seen: datetime
    last_seen: datetime
    attempts: int
    held: bool
    conflicts: int = 0  # for a known device: newer connections that claimed it while it was connected


class DialinHub:
    """The registry of identified connections (see the module docstring)."""

    def __init__(
        self, unknown: UnknownPolicy = "refuse", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unknown = unknown
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.live: dict[DeviceKey, Inbound] = {}
        self.held: dict[DeviceKey, Inbound] = {}
        self.pending: dict[DeviceKey, PendingIdentity] = {}
        self.observer: Callable[[HubEvent, Inbound], None] | None = None
        self._inventory: set[DeviceKey] = set()
        self._allowed: dict[DeviceKey, tuple[Network, ...]] = {}  # per-channel source networks
        self._conflict_logged: dict[DeviceKey, float] = {}
        self.conflicts: dict[DeviceKey, PendingIdentity] = {}  # known devices claimed twice
        self._expected: Counter[DeviceKey] = Counter()  # devices of open dial-in channels
        self._waiters: dict[DeviceKey, list[asyncio.Future[None]]] = {}
        self._watchers: dict[DeviceKey, Callable[[Inbound], None]] = {}
        self.on_bound: Callable[[DeviceKey, Inbound], None] | None = None  # a cluster member takes the lease
        self.on_lost: Callable[[DeviceKey], None] | None = None  # ... and says the device hung up
        self._logged: dict[DeviceKey, float] = {}
        self.trusts = TrustBook()  # operators' grants for one connection's archive request

    # -- what the channels and the inventory expect --------------------------------------------

    def expects(self, device: DeviceKey) -> bool:
        """Whether a channel (open, or in the inventory) is the bus behind this device."""
        return device in self._inventory or device in self._expected

    def inventory_loaded(
        self, devices: Iterable[DeviceKey], allowed: Mapping[DeviceKey, tuple[Network, ...]] | None = None
    ) -> None:
        """The devices of the inventory's dial-in channels (and the source networks their channels
        allow, if any); held connections now known are bound."""
        self._inventory = set(devices)
        self._allowed = {device: nets for device, nets in (allowed or {}).items() if nets}
        for device in [d for d in self.held if self.expects(d)]:
            inbound = self.held.pop(device)
            self.pending.pop(device, None)
            if not self._bind_known(inbound, device):
                inbound.close(inbound.close_reason or "conflict")

    def expect(self, device: DeviceKey, allow: tuple[Network, ...] = ()) -> None:
        """A channel for ``device`` was opened (``forget`` undoes it); ``allow``: the source networks
        its channel accepts the device from (empty: any)."""
        self._expected[device] += 1
        if allow:
            self._allowed[device] = allow

    def forget(self, device: DeviceKey) -> None:
        """A channel for ``device`` was closed."""
        self._expected[device] -= 1
        if self._expected[device] <= 0:
            del self._expected[device]

    def watch(self, device: DeviceKey, bound: Callable[[Inbound], None]) -> None:
        """Call ``bound`` with each connection bound to ``device`` from now on (a concentrator link
        takes every new login at once, so it confirms it; ``unwatch`` undoes it)."""
        self._watchers[device] = bound

    def unwatch(self, device: DeviceKey, bound: Callable[[Inbound], None]) -> None:
        """Stop calling ``bound`` (if it is still the watcher of ``device``)."""
        if self._watchers.get(device) == bound:
            del self._watchers[device]

    # -- what the listeners report ------------------------------------------------------------

    def bind(self, inbound: Inbound, identity: str) -> bool:
        """An identified connection: bind it, hold it, or refuse it (False: the listener closes it)."""
        self.counts["identified"] += 1
        self.notify("identified", inbound)
        device = (inbound.kind, identity)
        if self.expects(device):
            return self._bind_known(inbound, device)
        if device not in self.pending and len(self.pending) >= MAX_PENDING:
            # a flood of made-up identities must not grow memory: refused, counted, not listed
            self.counts["refused_pending_full"] += 1
            self.notify("refused", inbound)
            return False
        now = datetime.now(UTC)
        entry = self.pending.get(device)
        if entry is None:
            entry = self.pending[device] = PendingIdentity(
                identity, inbound.kind, inbound.listener_label, inbound.peer, now, now, 0, False
            )
        entry.attempts += 1
        entry.last_seen, entry.peer = now, inbound.peer
        entry.held = self.unknown == "hold"
        self._log_unknown(device, inbound)
        if entry.held:
            self.counts["held"] += 1
            inbound.move_to("held")
            older = self.held.get(device)
            self.held[device] = inbound
            if older is not None:
                older.close("replaced")
            self.notify("held", inbound)
            return True
        self.counts["refused_unknown"] += 1
        self.notify("refused", inbound)
        return False

    def lost(self, inbound: Inbound) -> None:
        """A connection closed (any reason)."""
        if inbound.identity is None:
            return
        device = (inbound.kind, inbound.identity)
        if self.live.get(device) is inbound:
            del self.live[device]
            if self.on_lost is not None:
                self.on_lost(device)
        if self.held.get(device) is inbound:
            del self.held[device]

    def drop(self, device: DeviceKey, reason: str) -> None:
        """Close the device's live connection (another daemon holds its channel now)."""
        inbound = self.live.pop(device, None)
        if inbound is not None and not inbound.closed:
            inbound.close(reason)

    def connected_elsewhere(self, inbound: Inbound, holder: str) -> None:
        """Another cluster member (``holder``) has this connection's device connected: the same
        conflict as a second connection here (counted, listed, logged); ``inbound`` is closed and the
        holder keeps its connection."""
        device = (inbound.kind, inbound.identity or "?")
        if self.live.get(device) is not inbound:
            return  # closed or replaced meanwhile: a newer connection makes its own claim
        del self.live[device]
        self.counts["conflict"] += 1
        self._record_conflict(device, inbound)
        self._alarm(
            "dial-in identity conflict: a second connection claims a connected device",
            device,
            inbound,
            None,
            f"kept the established connection on cluster member {holder}",
        )
        self.notify("conflict", inbound)
        inbound.close("conflict")

    def identity_undecided(self, inbound: Inbound, reason: str) -> None:
        """Nothing could verify the meters behind ``inbound`` (``reason``): no password goes to it and
        its readings are stored as suspect; said once per connection, counted."""
        if inbound.undecided is not None:
            return
        inbound.undecided = reason
        self.counts["unverified"] += 1
        log.warning(
            "dial-in connection not verified: no password goes to it, its readings are stored as suspect",
            extra={"kind": inbound.kind, "identity": inbound.identity, "peer": inbound.peer}
            | {"reason": reason},
        )

    def identity_refused(self, inbound: Inbound, reason: str) -> None:
        """The meters behind ``inbound`` are not the inventory's: an alarm; the connection is closed."""
        self.counts["identity_mismatch"] += 1
        device = (inbound.kind, inbound.identity or "?")
        log.error(
            "dial-in connection failed the meter identity check: closed, nothing written to it",
            extra={"kind": device[0], "identity": device[1], "peer": inbound.peer, "reason": reason},
        )
        inbound.close("identity_mismatch")
        self.notify("conflict", inbound)

    def notify(self, event: HubEvent, inbound: Inbound) -> None:
        """Tell the observer (``headend listen`` prints these)."""
        if self.observer is not None:
            self.observer(event, inbound)

    def _bind_known(self, inbound: Inbound, device: DeviceKey) -> bool:
        """Bind ``inbound`` as the device's live connection, unless its source is not allowed or a
        healthy established connection keeps the device (False, ``close_reason`` says why)."""
        allowed = self._allowed.get(device)
        if allowed and not address_in(inbound.host, allowed):
            self.counts["refused_source"] += 1
            self._alarm("dial-in identity from a source its channel does not allow", device, inbound, None)
            inbound.close_reason = "refused_source"
            self.notify("refused", inbound)
            return False
        older = self.live.get(device)
        if older is not None and older is not inbound and not older.closed:
            self.counts["conflict"] += 1
            self._record_conflict(device, inbound)
            keep = older.answering(self.clock())
            self._alarm(
                "dial-in identity conflict: a second connection claims a connected device",
                device,
                inbound,
                older,
                "kept the established connection" if keep else "replaced the silent established connection",
            )
            self.notify("conflict", inbound)
            if keep:
                inbound.close_reason = "conflict"
                return False
        inbound.move_to("bound")
        self.live[device] = inbound
        if older is not None and older is not inbound:
            self.counts["replaced"] += 1
            older.close("replaced")
            self.notify("replaced", older)
        for waiter in self._waiters.pop(device, []):
            if not waiter.done():
                waiter.set_result(None)
        watcher = self._watchers.get(device)
        if watcher is not None:
            watcher(inbound)
        if self.on_bound is not None:
            self.on_bound(device, inbound)
        return True

    def _record_conflict(self, device: DeviceKey, inbound: Inbound) -> None:
        """Count a conflict against the device (listed by ``headend channels pending``)."""
        now = datetime.now(UTC)
        entry = self.conflicts.get(device)
        if entry is None:
            if len(self.conflicts) >= MAX_PENDING:
                return
            entry = self.conflicts[device] = PendingIdentity(
                device[1], device[0], inbound.listener_label, inbound.peer, now, now, 0, False
            )
        entry.attempts += 1
        entry.conflicts += 1
        entry.last_seen, entry.peer = now, inbound.peer

    def _alarm(
        self,
        message: str,
        device: DeviceKey,
        inbound: Inbound,
        older: Inbound | None,
        action: str = "refused",
    ) -> None:
        """Log a conflict or a refused source, once a minute per device (a redialling impostor
        cannot flood the log; every attempt is counted)."""
        now = self.clock()
        last = self._conflict_logged.get(device)
        if last is not None and now - last < CONFLICT_LOG_EVERY_S:
            return
        if len(self._conflict_logged) >= MAX_PENDING:
            self._conflict_logged.clear()
        self._conflict_logged[device] = now
        log.warning(
            message,
            extra={
                "kind": device[0],
                "identity": device[1],
                "new_peer": inbound.peer,
                "established_peer": older.peer if older is not None else "",
                "action": action,
            },
        )

    def _log_unknown(self, device: DeviceKey, inbound: Inbound) -> None:
        now = self.clock()
        last = self._logged.get(device)
        if last is not None and now - last < UNKNOWN_LOG_EVERY_S:
            return
        self._logged[device] = now
        log.warning(
            "unknown dial-in identity",
            extra={
                "kind": device[0],
                "identity": device[1],
                "peer": inbound.peer,
                "listener": inbound.listener_label,
                "action": "held" if self.unknown == "hold" else "refused",
            },
        )

    # -- what the channels ask ----------------------------------------------------------------

    def online(self, device: DeviceKey) -> bool:
        """Whether ``device`` has a live connection."""
        inbound = self.live.get(device)
        return inbound is not None and not inbound.closed

    def alive(self, device: DeviceKey) -> bool:
        """Whether ``device`` has a live connection that still answers (``Inbound.alive``): what a
        cluster member states as the device connected to it."""
        inbound = self.live.get(device)
        return inbound is not None and inbound.alive(self.clock())

    async def connection(self, device: DeviceKey, wait_s: float = 0.0) -> Inbound:
        """The live connection of ``device``, waiting up to ``wait_s`` for one; else ChannelOffline."""
        deadline = self.clock() + wait_s
        while True:
            inbound = self.live.get(device)
            if inbound is not None and not inbound.closed:
                return inbound
            left = deadline - self.clock()
            if left <= 0:
                kind, identity = device
                raise ChannelOffline(f"{kind}://{identity}: offline (no live connection from the device)")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(device, []).append(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(device)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[device]
