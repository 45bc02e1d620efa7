"""Operators' grants that let one connection of a dial-in device count as verified for its archive
request only (``headend channels trust``, migration 0051).

A replacement concentrator arrives with an empty archive, so the archive check closes it as an
impostor and the archive push that would fix it can never run. An empty archive proves nothing, so
nothing here accepts it by itself: a :class:`Trust` is a signed-in admin's grant for one device,
until ``expires_at``. The first connection of that device whose identity check fails while the
grant is open claims it (:meth:`TrustBook.claim`; no other connection can afterwards, the claim is
recorded in the database by the daemon); that connection is then neither closed nor verified: its
readings stay suspect, and the only password-bearing request it may get is the meter archive
(AFN 04 F10) of an archive request (:meth:`TrustBook.covers`). Once the pushed archive reads back
as the inventory's, the ordinary archive check verifies it; when the grant expires first, the next
check closes it as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headend.transport.listener import Inbound

log = logging.getLogger(__name__)
DeviceKey = tuple[str, str]  # (listener kind, identity), as in headend.transport.hub


@dataclass(slots=True)
class Trust:
    """One grant: its id, the device, who granted it and why, until when; ``used``: claimed (by
    ``holder`` in this process, or by an earlier connection as the database records)."""

    id: int
    device: DeviceKey
    granted_by: str
    reason: str
    expires_at: datetime
    used: bool = False
    holder: Inbound | None = None

    def open(self, now: datetime) -> bool:
        """Whether the grant still lasts."""
        return now < self.expires_at


class TrustBook:
    """The grants of the devices this process serves, and the claims not yet recorded."""

    def __init__(self) -> None:
        self._grants: dict[DeviceKey, Trust] = {}
        self.claims: list[tuple[int, str]] = []  # (grant id, peer) to record in the database

    def load(self, grants: Iterable[Trust]) -> None:
        """Replace the grants (those the database lists as lasting); a claim made here is kept."""
        fresh: dict[DeviceKey, Trust] = {}
        for grant in grants:
            known = self._grants.get(grant.device)
            if known is not None and known.id == grant.id:
                known.expires_at = grant.expires_at
                known.used = known.used or grant.used
                grant = known
            fresh[grant.device] = grant
        self._grants = fresh

    def claim(self, device: DeviceKey, inbound: Inbound) -> Trust | None:
        """The grant covering ``inbound`` (claimed by it now if nobody claimed it), else None."""
        grant = self._grants.get(device)
        if grant is None or not grant.open(datetime.now(UTC)):
            return None
        if grant.holder is inbound:
            return grant
        if grant.used:
            return None
        grant.used, grant.holder = True, inbound
        self.claims.append((grant.id, inbound.peer))
        log.warning(
            "dial-in connection trusted by an operator for its archive request only: its readings stay"
            " suspect until its archive agrees with the inventory",
            extra={
                "kind": device[0],
                "identity": device[1],
                "peer": inbound.peer,
                "trust": grant.id,
                "granted_by": grant.granted_by,
                "reason": grant.reason,
                "expires_at": grant.expires_at.isoformat(),
            },
        )
        return grant

    def covers(self, device: DeviceKey, inbound: Inbound) -> bool:
        """Whether ``inbound`` holds the device's open grant (claimed earlier)."""
        grant = self._grants.get(device)
        return grant is not None and grant.holder is inbound and grant.open(datetime.now(UTC))

    def take_claims(self) -> list[tuple[int, str]]:
        """The claims made since the last call (to record)."""
        claims, self.claims = self.claims, []
        return claims
