"""The engine's boundary to the transport and driver layers (``headend.transport``, ``headend.drivers``).

Everything the engine needs from a bus or a meter goes through :class:`DriverPort`, so the
worker, scheduler and backfill code never depend on a driver's concrete types.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from headend.config import RelayConfig
from headend.drivers import EDITIONS, DriverError, Secrets, capabilities_for, make_driver
from headend.drivers.base import Capabilities, MeterDriver, MeterRefused, NotSupported
from headend.drivers.base import ProfileRecord as DriverProfileRecord
from headend.drivers.dlt645 import Dlt645Driver
from headend.drivers.gdw1376_terminal import ArchivePoint, diff_archive
from headend.engine.backfill import ProfileRecord
from headend.engine.events import MeterEvent
from headend.engine.model import ChannelSpec, MeterSpec
from headend.metrics import EngineMetrics
from headend.secrets import MeterSecrets, SecretsError
from headend.store.trusts import TrustGrant
from headend.transport import (
    Bus,
    ChannelError,
    ChannelOffline,
    ChannelUnverified,
    ChannelUrlError,
    check_protocol,
    open_channel,
    parse_channel_url,
)
from headend.transport.bus import VerifiedBus
from headend.transport.concentrator import ConcentratorLink
from headend.transport.concentrator_dialin import DialinConcentratorLink
from headend.transport.hub import DialinHub
from headend.transport.trust import Trust
from headend.transport.url import ChannelConfig
from headend.vocabulary import ReadingQuality

log = logging.getLogger(__name__)
SECRETS_RETRY_S = 60.0  # an unreadable secrets file is tried again this often
IDENTITY_TRIES = 3  # meters asked for their number when verifying a dial-in connection
METER_NUMBER_DI = "04000402"
PROVE_LIMIT_S = 60.0  # a new dial-in connection's identity check before a cluster member claims it


def values_of(result: Any) -> dict[str, float]:
    """``{quantity: value}`` from a driver's read result (a mapping of numbers or of value objects)."""
    if type(result) is dict and all(type(v) is float for v in result.values()):
        return dict(result)  # what the drivers return: already {quantity: float}
    if not isinstance(result, Mapping):
        raise TypeError(f"driver read returned {type(result).__name__}, expected a mapping")
    out: dict[str, float] = {}
    for name, item in result.items():
        value = getattr(item, "value", item)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            out[name] = float(value)
    return out


def answered_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the meter answered (refusal, unsupported request): no mark against its health."""
    return (NotImplementedError, MeterRefused, NotSupported)


def offline_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the bus is unreachable by design (a dial-in device not connected), not the meter."""
    return (ChannelOffline,)


def unsupported_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the meter or model cannot do the request at all (e.g. keeps no load profile)."""
    return (NotImplementedError, NotSupported)


def _dialin_config(spec: ChannelSpec) -> ChannelConfig | None:
    """The parsed URL of a dial-in channel (None: the channel connects out, or vetting refuses it)."""
    try:
        config = parse_channel_url(spec.url)
    except ChannelUrlError:
        return None  # vetting refuses such rows before a worker exists
    return config if config.device is not None else None


def dialin_device(spec: ChannelSpec) -> tuple[str, str] | None:
    """The (listener kind, identity) a dial-in channel's device names itself with (None: the
    channel connects out)."""
    config = _dialin_config(spec)
    return config.device if config is not None else None


class DriverPort:
    """Opens channels and builds meter drivers with the real transport and driver packages."""

    def __init__(
        self,
        secrets: Secrets = None,
        relay: RelayConfig | None = None,
        hub: DialinHub | None = None,
    ) -> None:
        self.secrets = secrets  # a path (or None: environment only), MeterSecrets or Credentials
        self.relay = relay or RelayConfig()  # the drivers' confirmation window after a switch
        self.hub = hub  # the dial-in front end's registry (dtu:// and gdw1376:// channels), if listening
        self._loaded: Any = None
        self._failed_at = -SECRETS_RETRY_S

    def credentials_source(self) -> Any:
        """The meter secrets, loaded once; unreadable secrets cost writes only, never reads.

        A missing or malformed secrets file is logged (once per retry period) and the drivers get
        no credentials: reads go on, relay and clock writes are refused with "no password".
        """
        if not (self.secrets is None or isinstance(self.secrets, str | Path)):
            return self.secrets
        if self._loaded is not None:
            return self._loaded
        now = time.monotonic()
        if now - self._failed_at < SECRETS_RETRY_S:
            return MeterSecrets()
        try:
            self._loaded = MeterSecrets.load(self.secrets)
        except SecretsError as exc:
            self._failed_at = now
            log.warning(
                "meter secrets unavailable: meters are still read, relay and clock writes are refused",
                extra={"error": str(exc)},
            )
            return MeterSecrets()
        return self._loaded

    async def open_channel(self, spec: ChannelSpec) -> Bus:
        channel = open_channel(spec.url, self.hub)
        await channel.open()
        return channel

    def inventory_loaded(self, channels: Iterable[ChannelSpec]) -> None:
        """Tell the dial-in front end which identities the inventory's dial-in channels have."""
        if self.hub is not None:
            configs = [c for c in map(_dialin_config, channels) if c is not None and c.device is not None]
            self.hub.inventory_loaded(
                (c.device for c in configs if c.device is not None),
                {c.device: c.allow for c in configs if c.device is not None and c.allow},
            )

    def online(self, spec: ChannelSpec) -> bool | None:
        """Whether a dial-in channel's device is connected (None: not a dial-in channel)."""
        device = dialin_device(spec)
        if self.hub is None or device is None:
            return None
        return self.hub.online(device)

    def alive(self, spec: ChannelSpec) -> bool:
        """Whether a dial-in channel's device is connected here on a connection that still answers
        (``Inbound.alive``): what a cluster member states in the channel's lease."""
        device = dialin_device(spec)
        return self.hub is not None and device is not None and self.hub.alive(device)

    async def prove_identity(self, spec: ChannelSpec, meters: list[MeterSpec]) -> bool:
        """Check the meters behind a dial-in channel's new connection before a cluster member claims
        the channel's lease for it (no worker uses it yet). True: verified, or nothing can verify it
        (no meter has a recorded number or archive point: taken unverified, as a single daemon takes
        it). False: other meters answer (the connection is closed as an impostor), none answers, or
        the connection is gone. Nothing password-bearing is sent (see ``identity_verdict``): behind a
        DTU the meters' numbers, from a concentrator its archive (AFN 0A F10), over the connection the
        channel's worker then reads (a concentrator's link releases it still logged in)."""
        if dialin_device(spec) is None:
            return True
        channel = await self.open_channel(spec)
        try:
            drivers = [(meter, self.make_driver(channel, meter)) for meter in meters]
            async with asyncio.timeout(PROVE_LIMIT_S):
                await self.verify_connection(channel, drivers)
        except (ChannelError, ChannelUrlError, ConnectionError, DriverError, TimeoutError) as exc:
            log.warning(
                "dial-in connection not proven: its channel's lease stays where it is",
                extra={"channel": spec.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        finally:
            if isinstance(channel, DialinConcentratorLink):
                await channel.release()
            else:
                await channel.close()  # a DTU's channel leaves the device's connection up
        return True

    def refresh_dialin_gauges(self, metrics: EngineMetrics, channels: Iterable[ChannelSpec]) -> None:
        """``headend_channel_offline`` per dial-in channel and the front end's event counts."""
        if self.hub is None:
            return
        for spec in channels:
            online = self.online(spec)
            if online is not None:
                metrics.channel_offline.labels(spec.name).set(0.0 if online else 1.0)
        for event, count in list(self.hub.counts.items()):
            metrics.dialin.labels(event).set(count)

    def verification_due(self, channel: Bus | None) -> bool:
        """Whether ``channel``'s device dialled in on a connection not verified yet."""

        return isinstance(channel, VerifiedBus) and channel.verification_due

    async def verify_connection(self, channel: Bus, meters: list[tuple[MeterSpec, MeterDriver]]) -> None:
        """Verify the meters behind a dial-in connection before it is used; raises ChannelUnverified
        (the connection closed as an impostor) when other meters answer. See ``identity_verdict``."""

        if not isinstance(channel, VerifiedBus):
            return
        verdict = await channel.verify(lambda: identity_verdict(channel, meters), undecided_reason(channel))
        if verdict is False:
            raise ChannelUnverified(f"{channel.label}: other meters answer behind this connection: closed")

    def unverified(self, channel: Bus | None) -> bool:
        """Whether ``channel`` is a dial-in bus whose connection in use was not verified: what was
        read through it is stored as suspect (nothing verified who answered)."""
        return isinstance(channel, VerifiedBus) and not channel.verified

    def load_trusts(self, grants: Iterable[tuple[ChannelSpec, TrustGrant]]) -> None:
        """The operators' lasting grants (``headend channels trust``) of the dial-in channels."""
        if self.hub is None:
            return
        trusts = []
        for spec, grant in grants:
            device = dialin_device(spec)
            if device is not None:
                trusts.append(
                    Trust(grant.id, device, grant.granted_by, grant.reason, grant.expires_at, grant.used)
                )
        self.hub.trusts.load(trusts)

    def trust_claims(self) -> list[tuple[int, str]]:
        """The grants claimed by a connection since the last call: (grant id, peer), to record."""
        return self.hub.trusts.take_claims() if self.hub is not None else []

    def verify_again(self, channel: Bus | None) -> None:
        """Have the next job check ``channel``'s unverified connection again (the inventory changed)."""
        if isinstance(channel, VerifiedBus):
            channel.verify_again()

    def requeue_trust_claims(self, claims: list[tuple[int, str]]) -> None:
        """Claims that could not be recorded yet: returned for the next call of ``trust_claims``."""
        if self.hub is not None:
            self.hub.trusts.claims[:0] = claims

    def make_driver(self, channel: Bus, meter: MeterSpec) -> MeterDriver:
        config = getattr(channel, "config", None)
        if config is not None:
            check_protocol(meter.protocol, config)  # a one-line ChannelUrlError, counted as a failure
        address = meter.unit_id if meter.protocol == "modbus" else meter.address
        point = {"pn": meter.pn, "port": meter.port} if meter.port is not None else {}
        return make_driver(
            meter.protocol,
            channel,
            address,
            meter.model,
            self.credentials_source(),
            confirm_timeout_s=self.relay.confirm_timeout,
            confirm_poll_s=self.relay.confirm_poll,
            **point,
        )

    def has_memory(self, meter: MeterSpec) -> bool:
        """Whether the meter keeps a load profile / daily freeze to backfill from."""
        return self._capabilities(meter).memory

    def has_clock(self, meter: MeterSpec) -> bool:
        """Whether the meter has a clock to read and correct."""
        return self._capabilities(meter).clock

    def has_events(self, meter: MeterSpec) -> bool:
        """Whether the meter keeps standard event records."""
        return self._capabilities(meter).events

    @staticmethod
    def _capabilities(meter: MeterSpec) -> Capabilities:
        return capabilities_for(meter.protocol, meter.model)

    def profile_records(self, records: Iterable[DriverProfileRecord]) -> list[ProfileRecord]:
        """Normalise a driver's ``read_profile`` result."""
        out = []
        for record in records:
            quality: ReadingQuality = "freeze" if record.source == "daily_freeze" else "backfilled"
            out.append(ProfileRecord(record.ts, values_of(record.values), quality))
        return out

    async def read_events(self, driver: MeterDriver, kinds: list[str]) -> list[MeterEvent]:
        records = await driver.read_events(kinds)
        return [MeterEvent(r.kind, r.occurred_at, r.ended_at, dict(r.details)) for r in records]


def undecided_reason(channel: Bus) -> str:
    """Why a check that cannot decide leaves ``channel``'s connection unverified."""
    device = getattr(channel, "device", None)
    name = device[1] if isinstance(device, tuple) else channel.label
    if isinstance(channel, ConcentratorLink):
        return f"no meter behind concentrator {name} has a pn and port to find in its archive"
    return f"no meter behind DTU {name} has a recorded meter number (inventory meter_number)"


async def identity_verdict(channel: Bus, meters: list[tuple[MeterSpec, MeterDriver]]) -> bool | None:
    """Whether the meters behind ``channel`` are the inventory's: a concentrator's archive lists
    every inventory meter at its Pn and port; behind a DTU, DL/T 645-2007 meters with a recorded
    meter number are asked for it (04 00 04 02): one that matches verifies the connection, up to
    ``IDENTITY_TRIES`` meters are asked; answers (or refusals) that all differ refuse it (one
    swapped meter among others does not); none answering raises ChannelUnverified (the job waits,
    nothing is read). None: nothing to compare with (no meter has a recorded number)."""

    if isinstance(channel, ConcentratorLink):
        points = [
            ArchivePoint(m.pn, m.port, m.address, EDITIONS.get(m.protocol, 2007))
            for m, _driver in meters
            if m.pn is not None and m.port is not None
        ]
        if not points:
            return None
        diff = await diff_archive(channel, points)
        return not diff.missing and not diff.different
    answered = asked = 0
    for meter, driver in meters:
        if not (meter.identity and meter.protocol == "dlt645-2007" and isinstance(driver, Dlt645Driver)):
            continue
        if asked >= IDENTITY_TRIES:
            break
        asked += 1
        try:
            number = str(await driver.read_di(METER_NUMBER_DI))
        except MeterRefused:
            answered += 1  # it answered once (that is how its number was recorded): not this meter
            continue
        except DriverError:
            continue  # silence proves nothing either way
        if number == meter.identity:
            return True
        answered += 1
    if answered:
        return False
    if asked:
        raise ChannelUnverified(f"{channel.label}: no meter answered its number: the connection waits")
    return None
