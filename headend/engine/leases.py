"""This daemon's share of the channels when several daemons run on one database (``[cluster]``).

Every ``renew`` the daemon renews its membership, works out which enabled channels sticky rendezvous
hashing with bounded load gives it among the live members (:func:`assignment`: a daemon joining or
leaving moves about its own share, no daemon reads more than its fair share), lets go of the leases it
holds but is no longer given and takes or renews the ones it is given. A lease held by another live
daemon is not taken: that daemon lets it go at its next renewal, or it expires. The epochs held are what
the daemon names when it sends a relay frame (the database refuses a ``sent`` under any other, migration
0065). A lease given up is released only once the channel's worker has stopped. When the database stops
answering for half a lease, the daemon gives up every channel (before another daemon may take them).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence

import asyncpg

from headend.config import ClusterConfig
from headend.store.cluster import (
    enabled_channels,
    lease_owners,
    leave,
    live_members,
    release_lease,
    renew_member,
    take_lease,
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


class Leases:
    """The channels this daemon holds, with their epochs; ``renew()`` is one pass (see module doc)."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.host = socket.gethostname()
        self.member = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.held: dict[int, int] = {}
        self._releasing: set[int] = set()
        self._renewed = time.monotonic()

    def owns(self, channel_id: int) -> bool:
        """Whether this daemon holds the channel's lease."""
        return channel_id in self.held

    def lease_of(self, channel_id: int) -> tuple[str, int] | None:
        """(this daemon, epoch) for a held channel, None otherwise."""
        epoch = self.held.get(channel_id)
        return None if epoch is None else (self.member, epoch)

    async def renew(self, pool: asyncpg.Pool) -> bool:
        """One renewal pass; whether the set of held channels changed."""
        before = dict(self.held)
        try:
            async with pool.acquire() as conn:
                await self._renew(conn)
            self._renewed = time.monotonic()
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            if self.held and time.monotonic() - self._renewed >= self.config.lease / 2:
                log.warning(
                    "cluster leases lapsed: the database did not answer for a lease; reading no channel",
                    extra={"member": self.member, "error": f"{type(exc).__name__}: {exc}"},
                )
                self.held.clear()
        changed = set(before) != set(self.held)
        if changed:
            log.info(
                "cluster channels changed",
                extra={
                    "member": self.member,
                    "channels": sorted(self.held),
                    "taken": sorted(set(self.held) - set(before)),
                    "released": sorted(set(before) - set(self.held)),
                },
            )
        return changed

    async def _renew(self, conn: asyncpg.Connection) -> None:
        ttl = self.config.lease
        await renew_member(conn, self.member, self.host, os.getpid(), ttl)
        members = await live_members(conn)
        assigned = assignment(await enabled_channels(conn), members, await lease_owners(conn))
        given = {c for c, member in assigned.items() if member == self.member}
        for channel_id in set(self.held) - given:
            del self.held[channel_id]
            self._releasing.add(channel_id)  # let go once its worker has stopped (release_stopped)
        for channel_id in sorted(given):
            epoch = await take_lease(conn, channel_id, self.member, ttl)
            if epoch is None:
                self.held.pop(channel_id, None)
            else:
                self.held[channel_id] = epoch

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
        try:
            async with pool.acquire() as conn:
                await leave(conn, self.member)
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("cluster leave failed; the leases expire by themselves", extra={"error": str(exc)})
