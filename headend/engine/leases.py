"""This daemon's share of the channels when several daemons run on one database (``[cluster]``).

Every ``renew`` the daemon renews its membership, works out which enabled channels sticky rendezvous
hashing with bounded load gives it among the live members (:func:`assignment`: a daemon joining or
leaving moves about its own share, no daemon reads more than its fair share), lets go of the leases it
holds but is no longer given and takes or renews the ones it is given. A lease held by another live
daemon is not taken: that daemon lets it go at its next renewal, or it expires. The epochs held are what
the daemon names when it sends a relay frame (the database refuses a ``sent`` under any other, migration
0065). A dial-in channel's lease is taken when its device connects here (:meth:`Leases.seize`),
unless another member has the device connected (the engine first has a connection that would move the
lease prove its identity, see :meth:`Leases.holding`); each renewal restates which held dial-in
channels have their device connected here on a connection that still answers. A lease given up is
released only once the channel's worker has stopped. When the database stops answering for half a
lease, the daemon gives up every channel (before another daemon may take them).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from headend.config import ClusterConfig
from headend.metrics import EngineMetrics
from headend.store.cluster import (
    Holding,
    enabled_channels,
    lease_disconnected,
    lease_owners,
    leave,
    live_holding,
    live_members,
    release_lease,
    renew_member,
    seize_lease,
    take_leases,
    take_service,
)
from headend.store.writer import UNAVAILABLE

log = logging.getLogger("headend.cluster")


def _score(member: str, channel_id: int) -> bytes:
    return hashlib.sha256(f"{member}\x00{channel_id}".encode()).digest()


def assignment(channels: Iterable[int], members: Sequence[str], owners: Mapping[int, str]) -> dict[int, str]:
    """Which member reads each channel: sticky rendezvous hashing with bounded load.

    Every member reads at most its fair share ``ceil(channels / members)``. A channel stays with its
    current owner (``owners``: the live leases) while that owner is a member within its share (an owner
    above it keeps its highest-ranked channels); the other channels, in id order, go to the
    highest-ranked member (hash of member and channel) with room. So a daemon joining takes about its
    share from the others, and a daemon leaving gives only its own channels to the others."""
    ordered = sorted(channels)
    if not members:
        return {}
    share = math.ceil(len(ordered) / len(members))
    given: dict[int, str] = {}
    kept: dict[str, list[int]] = {m: [] for m in members}
    for channel_id in ordered:
        owner = owners.get(channel_id)
        if owner in kept:
            kept[owner].append(channel_id)
    for member, held in kept.items():
        held.sort(key=lambda c: _score(member, c), reverse=True)
        for channel_id in held[:share]:
            given[channel_id] = member
    load = {m: min(len(held), share) for m, held in kept.items()}
    for channel_id in ordered:
        if channel_id in given:
            continue
        for member in sorted(members, key=lambda m: _score(m, channel_id), reverse=True):
            if load[member] < share:
                given[channel_id] = member
                load[member] += 1
                break
    return given


@dataclass(frozen=True, slots=True)
class Claim:
    """A dial-in connection's claim on its channel's lease: taken (``fresh``: not held here before),
    or refused because ``holder``, another member, has the device connected."""

    taken: bool
    fresh: bool = False
    holder: str = ""


class Leases:
    """The channels this daemon holds, with their epochs, and whether it is the elected one for the
    services that run once; ``renew()`` is one pass (see module doc)."""

    def __init__(self, config: ClusterConfig, metrics: EngineMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or EngineMetrics()
        self.host = socket.gethostname()
        self.member = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.held: dict[int, int] = {}
        self.dialin: set[int] = set()  # held dial-in channels: taken on connection, kept while renewed
        self.lost: set[int] = set()  # dial-in channels another daemon seized since the last look
        self.service_epoch: int | None = None  # the services' lease, while this daemon is elected
        self.connected: Callable[[int], bool] = lambda channel_id: False  # its device connected here
        self._releasing: set[int] = set()
        self._renewed = time.monotonic()

    def owns(self, channel_id: int) -> bool:
        """Whether this daemon holds the channel's lease."""
        return channel_id in self.held

    def lease_of(self, channel_id: int) -> tuple[str, int] | None:
        """(this daemon, epoch) for a held channel, None otherwise."""
        epoch = self.held.get(channel_id)
        return None if epoch is None else (self.member, epoch)

    def elected(self) -> tuple[str, int] | None:
        """(this daemon, epoch) of the services' lease while this daemon holds it, None otherwise."""
        return None if self.service_epoch is None else (self.member, self.service_epoch)

    def _count(self, direction: str, n: int) -> None:
        if n:
            self.metrics.cluster_moves.labels(daemon=self.member, direction=direction).inc(n)

    async def renew(self, pool: asyncpg.Pool) -> bool:
        """One renewal pass; whether the set of held channels or the election changed."""
        before, elected = dict(self.held), self.service_epoch
        try:
            async with pool.acquire() as conn:
                await self._renew(conn)
            self._renewed = time.monotonic()
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            self.metrics.cluster_renew_failures.labels(daemon=self.member).inc()
            lapsed = time.monotonic() - self._renewed >= self.config.lease / 2
            if (self.held or self.service_epoch) and lapsed:
                log.warning(
                    "cluster leases lapsed: the database did not answer for a lease; reading no channel",
                    extra={"member": self.member, "error": f"{type(exc).__name__}: {exc}"},
                )
                self.held.clear()
                self.dialin.clear()
                self.service_epoch = None
        taken, released = set(self.held) - set(before), set(before) - set(self.held)
        self._count("taken", len(taken))
        self._count("released", len(released - self.lost))
        self._count("lost", len(released & self.lost))
        self._publish()
        if taken or released:
            log.info(
                "cluster channels changed",
                extra={
                    "member": self.member,
                    "channels": sorted(self.held),
                    "taken": sorted(taken),
                    "released": sorted(released),
                },
            )
        if (elected is None) != (self.service_epoch is None):
            log.info(
                "cluster services elected here" if self.service_epoch else "cluster services elsewhere",
                extra={"member": self.member, "epoch": self.service_epoch},
            )
        return bool(taken or released) or (elected is None) != (self.service_epoch is None)

    def _publish(self) -> None:
        self.metrics.cluster_channels.labels(daemon=self.member).set(len(self.held))
        self.metrics.cluster_elected.labels(daemon=self.member).set(1 if self.service_epoch else 0)

    async def _renew(self, conn: asyncpg.Connection) -> None:
        ttl = self.config.lease
        await renew_member(conn, self.member, self.host, os.getpid(), ttl)
        members = await live_members(conn)
        channels = await enabled_channels(conn)
        polled = [c for c, dialin in channels.items() if not dialin]
        assigned = assignment(polled, members, await lease_owners(conn))
        given = {c for c, member in assigned.items() if member == self.member}
        for channel_id in set(self.held) - given - self.dialin:
            del self.held[channel_id]
            self._releasing.add(channel_id)  # let go once its worker has stopped (release_stopped)
        dialin = {c for c in self.dialin if c in channels}
        here = {c for c in dialin if self.connected(c)}
        taken = await take_leases(conn, sorted(given | dialin), self.member, ttl, here)
        for channel_id in sorted(self.dialin - set(taken)):  # seized by the member the device connected to
            self.dialin.discard(channel_id)
            self.held.pop(channel_id, None)
            self.lost.add(channel_id)
        for channel_id in given - set(taken):  # another live member's still
            self.held.pop(channel_id, None)
        self.held.update(taken)
        self.service_epoch = await take_service(conn, self.member, ttl)

    async def holding(self, pool: asyncpg.Pool, channel_id: int) -> Holding | None:
        """Who holds a dial-in channel's lease now (None: nobody): a connection here that would move
        it to this daemon (a new epoch) must first prove its identity."""
        async with pool.acquire() as conn:
            return await live_holding(conn, channel_id)

    async def seize(self, pool: asyncpg.Pool, channel_id: int) -> Claim:
        """A dial-in channel's device connected here: take its lease with the next epoch (the daemon
        that held it lets go at its next renewal), unless another member holds it with the device
        connected (then this connection is a conflict)."""
        async with pool.acquire() as conn:
            seized = await seize_lease(conn, channel_id, self.member, self.config.lease)
        epoch = seized.epoch
        if epoch is None:
            return Claim(taken=False, holder=seized.holder)
        fresh = self.held.get(channel_id) != epoch
        self.held[channel_id] = epoch
        self.dialin.add(channel_id)
        self.lost.discard(channel_id)
        if fresh:
            self._count("seized", 1)
            self._publish()
            log.info(
                "cluster dial-in channel taken on connection",
                extra={"member": self.member, "channel_id": channel_id, "epoch": epoch},
            )
        return Claim(taken=True, fresh=fresh)

    async def disconnected(self, pool: asyncpg.Pool, channel_id: int) -> None:
        """The device of a held dial-in channel hung up here: its lease says so at once (the next
        renewal restates it if this write is lost)."""
        if channel_id not in self.held:
            return
        try:
            async with pool.acquire() as conn:
                await lease_disconnected(conn, channel_id, self.member)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning(
                "cluster disconnection not recorded", extra={"channel_id": channel_id, "error": str(exc)}
            )

    async def release_stopped(self, pool: asyncpg.Pool) -> None:
        """Let go of the leases given up at the last renewal, whose workers have stopped since (the
        next owner never talks to the bus while this daemon still does)."""
        if not self._releasing:
            return
        try:
            async with pool.acquire() as conn:
                for channel_id in sorted(self._releasing):
                    await release_lease(conn, channel_id, self.member)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("cluster release failed; the leases expire by themselves", extra={"error": str(exc)})
        self._releasing.clear()

    async def leave(self, pool: asyncpg.Pool) -> None:
        """Let every lease go and leave the membership (a clean shutdown: the others take over at once)."""
        self.held.clear()
        self.dialin.clear()
        self.service_epoch = None
        try:
            async with pool.acquire() as conn:
                await leave(conn, self.member)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("cluster leave failed; the leases expire by themselves", extra={"error": str(exc)})
