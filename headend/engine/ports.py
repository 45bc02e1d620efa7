"""The engine's boundary to the transport and driver layers (``headend.transport``, ``headend.drivers``).

Everything the engine needs from a bus or a meter goes through :class:`DriverPort`, so the
worker, scheduler and backfill code never depend on a driver's concrete types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from headend.engine.backfill import ProfileRecord
from headend.engine.events import MeterEvent
from headend.engine.model import ChannelSpec, MeterSpec

if TYPE_CHECKING:
    from headend.metrics import EngineMetrics
    from headend.transport.hub import DialinHub


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
    return (NotImplementedError, *_driver_errors("MeterRefused", "NotSupported"))


def offline_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the bus is unreachable by design (a dial-in device not connected), not the meter."""
    try:
        from headend.transport import ChannelOffline
    except ImportError:
        return ()
    return (ChannelOffline,)


def unsupported_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning the meter or model cannot do the request at all (e.g. keeps no load profile)."""
    return (NotImplementedError, *_driver_errors("NotSupported"))


@cache
def _driver_errors(*names: str) -> tuple[type[BaseException], ...]:
    try:
        from headend.drivers import base
    except ImportError:  # the engine also runs (e.g. inventory-only) without the drivers package
        return ()
    return tuple(getattr(base, name) for name in names if hasattr(base, name))


class DriverPort:
    """Opens channels and builds meter drivers with the real transport and driver packages."""

    def __init__(self, secrets: Any = None, hub: DialinHub | None = None) -> None:
        self.secrets = secrets
        self.hub = hub  # the dial-in front end's registry (``dtu://`` channels), if listening

    async def open_channel(self, spec: ChannelSpec) -> Any:
        from headend.transport import open_channel

        channel = open_channel(spec.url, self.hub)
        opener = getattr(channel, "open", None)
        if opener is not None:
            await opener()
        return channel

    def inventory_loaded(self, channels: Iterable[ChannelSpec]) -> None:
        """Tell the dial-in front end which identities the inventory's ``dtu://`` channels have."""
        if self.hub is not None:
            prefix = "dtu://"
            self.hub.inventory_loaded(
                spec.url[len(prefix) :].partition("?")[0] for spec in channels if spec.url.startswith(prefix)
            )

    def online(self, spec: ChannelSpec) -> bool | None:
        """Whether a dial-in channel's device is connected (None: not a dial-in channel)."""
        if self.hub is None or not spec.url.startswith("dtu://"):
            return None
        return self.hub.online(spec.url[len("dtu://") :].partition("?")[0])

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

    def make_driver(self, channel: Any, meter: MeterSpec) -> Any:
        from headend.drivers import make_driver

        address: Any = meter.unit_id if meter.protocol == "modbus" else meter.address
        return make_driver(meter.protocol, channel, address, meter.model, self.secrets)

    def has_memory(self, meter: MeterSpec) -> bool:
        """Whether the meter keeps a load profile / daily freeze to backfill from."""
        return meter.protocol.startswith("dlt645")

    def has_events(self, meter: MeterSpec) -> bool:
        return meter.protocol.startswith("dlt645")

    def profile_records(self, records: Iterable[Any]) -> list[ProfileRecord]:
        """Normalise a driver's ``read_profile`` result."""
        out = []
        for record in records:
            quality = "freeze" if record.source in ("freeze", "daily_freeze") else "backfilled"
            out.append(ProfileRecord(record.ts, values_of(record.values), quality))
        return out

    async def read_events(self, driver: Any, kinds: list[str]) -> list[MeterEvent]:
        records = await driver.read_events(kinds)
        return [
            MeterEvent(r.kind, r.occurred_at, getattr(r, "ended_at", None), dict(getattr(r, "details", {})))
            for r in records
        ]
