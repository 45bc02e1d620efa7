"""The daemon's check of the stored inventory with the import's rules.

Rows written by an older version or by hand may break them: a channel whose URL the daemon cannot
open, a second channel name for a bus already polled (its meters would be read and billed twice), a
meter whose protocol does not fit its channel, an unknown model, a Modbus unit id outside 1..247 or
a DL/T 645 broadcast address. Those are left out of polling and reported; everything else runs.
"""

from __future__ import annotations

from headend import limits
from headend.engine.model import ChannelSpec, InventorySnapshot, MeterSpec
from headend.transport.url import ChannelConfig, ChannelUrlError, check_protocol, parse_channel_url
from protocols.models import load_model_data, model_names

BROADCAST_ADDRESSES = ("999999999999", "AAAAAAAAAAAA")
MODEL_FAMILIES = ("modbus", "gdw1376-group")  # the model's protocol is the meter's; else "dlt645"


def meter_problem(meter: MeterSpec, channel: ChannelConfig) -> str | None:
    """Why the daemon must not poll ``meter`` on ``channel``, or None."""
    try:
        check_protocol(meter.protocol, channel)
        if meter.protocol == "modbus":
            limits.unit_id(meter.unit_id if meter.unit_id is not None else -1)
    except ValueError as exc:
        return str(exc)
    if meter.protocol != "modbus" and meter.address.upper() in BROADCAST_ADDRESSES:
        return f"{meter.address} is a DL/T 645 broadcast address, not a meter's"
    if meter.model not in model_names():
        return f"unknown meter model {meter.model!r}"
    family = meter.protocol if meter.protocol in MODEL_FAMILIES else "dlt645"
    if load_model_data(meter.model).get("protocol") != family:
        return f"model {meter.model!r} is not a {family} model"
    return None


def vet(snapshot: InventorySnapshot) -> tuple[InventorySnapshot, list[str]]:
    """The part of ``snapshot`` the daemon can poll safely, and one line per channel or meter left out.

    Of two channels on one bus the one with the lower id is kept.
    """
    problems: list[str] = []
    channels: dict[int, ChannelSpec] = {}
    configs: dict[int, ChannelConfig] = {}
    owners: dict[str, ChannelSpec] = {}
    for channel_id in sorted(snapshot.channels):
        spec = snapshot.channels[channel_id]
        try:
            config = parse_channel_url(spec.url)
        except ChannelUrlError as exc:
            problems.append(f"channel {spec.name} not polled: {exc}")
            continue
        owner = owners.get(config.bus)
        if owner is not None:
            problems.append(
                f"channel {spec.name} not polled: same bus as channel {owner.name} ({owner.url});"
                " its meters would be read and billed twice"
            )
            continue
        owners[config.bus] = spec
        channels[channel_id], configs[channel_id] = spec, config
    meters_by_channel: dict[int, list[MeterSpec]] = {}
    for channel_id in channels:
        kept = meters_by_channel[channel_id] = []
        for meter in snapshot.meters_by_channel.get(channel_id, []):
            problem = meter_problem(meter, configs[channel_id])
            if problem is None:
                kept.append(meter)
            else:
                problems.append(f"meter {meter.label} (id {meter.id}) not polled: {problem}")
    return InventorySnapshot(channels, meters_by_channel), problems
