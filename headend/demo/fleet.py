"""The demo's simulated field: five buses of meters, a concentrator, and the inventory that points the
daemon at them.

Four buses listen like field equipment on the LAN (a TCP serial server, ptys, a Modbus TCP
gateway); the fifth sits behind a simulated cellular DTU that dials in to the daemon's listener, and
a simulated Q/GDW 1376.1 concentrator with its own DL/T 645 meters dials in to the daemon's
concentrator listener (bound by its login, read natively and through forwarding).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from headend.inventory import ChannelEntry, Inventory, MeterEntry
from simulators import BusSpec, SimBus, start_bus
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from simulators.dtu import DtuSpec, SimDtu

STORY_ACCOUNT = "DEMO-0001"
DTU_IDENTITY = "DTU-DEMO-01"
DTU_HEARTBEAT = b"HB"
CONCENTRATOR_CHANNEL = "concentrator"
CONCENTRATOR_ADDRESS = "0314-25394"
CONCENTRATOR_METERS = 2
STORY_KWH_PER_INTERVAL = 0.3  # the story customer's load: about 1.5 x the opening balance per interval
_RATE = re.compile(r"(no_reply|late|corrupt|garbage|garbage_inside|truncate)=([0-9.]+)")


@dataclass(frozen=True, slots=True)
class DemoBus:
    """One simulated bus as the demo wires it: its channel name, protocol and simulator spec."""

    channel: str
    protocol: str  # inventory protocol: dlt645-2007 | dlt645-1997 | modbus
    model: str
    spec: BusSpec
    url_options: str = ""  # channel URL query the daemon uses (e.g. the pty's line settings)
    dial_in: str = ""  # registration id of the simulated DTU carrying this bus (it dials in)


def demo_buses(meters: int, interval_s: int, seed: int, password: str) -> list[DemoBus]:
    """The demo's buses: DL/T 645-2007 over a TCP serial server, 1997 and Modbus RTU on ptys, DL/T 645-2007
    behind a cellular DTU that dials in, Modbus TCP.

    ``interval_s`` becomes the DL/T 645 meters' load-profile period (at least a minute: records carry
    no seconds), so missed intervals can be backfilled from the meters' memory. Meter #1 of the 2007
    bus drops off the bus for one interval after the first cycle; meter #2's clock is 95 s fast
    (corrected by the clock check). The DL/T 645 meters take ``password`` (level 02) for relay control
    and clock setting.
    """
    offline_at = interval_s + 5  # misses the second cycle
    return [
        DemoBus(
            "dtu-2007",
            "dlt645-2007",
            "dlt645-generic",
            BusSpec(
                edition=2007,
                meters=meters,
                transport="tcp",
                line_timing=True,
                baud=9600,
                faults=f"no_reply=0.01,garbage=0.005,offline=#1@{offline_at}+{interval_s}",
                seed=seed,
                profile_period_s=profile_period(interval_s),
                history_days=1,
                clock_offsets_s={2: 95.0},
                password=password,
            ),
            "?baud=9600",  # the serial side of the TCP serial server: timeouts follow its line time
        ),
        DemoBus(
            "rs485-1997",
            "dlt645-1997",
            "dlt645-generic",
            BusSpec(
                edition=1997,
                meters=4,
                transport="pty",
                line_timing=True,
                baud=2400,
                faults="no_reply=0.02",
                seed=seed + 1,
                history_days=1,
                password=password,
            ),
            "?baud=2400&parity=N",
        ),
        DemoBus(
            "rs485-modbus",
            "modbus",
            "eastron_sdm630",
            BusSpec(
                protocol="modbus",
                model="eastron_sdm630",
                meters=3,
                transport="pty",
                phases=3,
                seed=seed + 2,
                history_days=1,
            ),
            "?baud=9600&parity=N",
        ),
        DemoBus(
            "gprs-dtu",
            "dlt645-2007",
            "dlt645-generic",
            BusSpec(
                edition=2007,
                meters=2,
                transport="carried",
                line_timing=True,
                baud=2400,
                seed=seed + 4,
                profile_period_s=profile_period(interval_s),
                history_days=1,
                password=password,
            ),
            "?baud=2400",
            dial_in=DTU_IDENTITY,
        ),
        DemoBus(
            "gw-modbus-tcp",
            "modbus",
            "hiking_dds238_2_znsr",
            BusSpec(
                protocol="modbus",
                model="hiking_dds238_2_znsr",
                meters=1,
                transport="modbus-tcp",
                seed=seed + 3,
                history_days=1,
            ),
        ),
    ]


def profile_period(interval_s: int) -> int:
    """The meters' load-profile period for a read interval: the interval in whole minutes, else 1 minute."""
    return interval_s if interval_s % 60 == 0 else 60


def backlog_s(interval_s: int) -> int:
    """How long before the demo its meters were installed: five intervals and two profile records."""
    return max(5 * interval_s, 2 * profile_period(interval_s))


def fault_rates(faults: str) -> dict[str, float]:
    """The per-exchange fault rates of a simulator fault spec (scheduled faults left out)."""
    return {kind: float(rate) for kind, rate in _RATE.findall(faults)}


class DemoFleet:
    """The running simulators of the demo and the inventory describing them."""

    def __init__(self, buses: list[DemoBus], interval_s: int) -> None:
        self.buses = buses
        self.interval_s = interval_s
        self.running: dict[str, Any] = {}
        self.dtus: list[SimDtu] = []
        self.concentrator: SimConcentrator | None = None  # built by start, dials in with dial_in

    async def start(self) -> None:
        """Start every bus (all or none: a failure stops the ones already started); DTUs dial in later."""
        try:
            for bus in self.buses:
                if bus.dial_in:
                    self.running[bus.channel] = await SimBus(bus.spec).start()
                else:
                    self.running[bus.channel] = await start_bus(bus.spec)
            self.concentrator = SimConcentrator(
                ConcentratorSpec(
                    address=CONCENTRATOR_ADDRESS,
                    meters=CONCENTRATOR_METERS,
                    ports=1,
                    heartbeat_s=5.0,
                    latency_ms=20.0,
                    redial_s=0.5,
                    login_timeout_s=2.0,
                    history_days=1,
                    seed=self.buses[0].spec.seed + 5,
                )
            )
            model = self.story_meter.model
            target_kw = STORY_KWH_PER_INTERVAL * 3600 / self.interval_s
            model.load_scale = target_kw / max(model.power_at(model.source.now()), 0.05)
        except BaseException:
            await self.stop()
            raise

    async def dial_in(self, host: str, port: int, concentrator_port: int) -> None:
        """Start the DTUs of the dial-in buses (they connect to the daemon's DTU listener at
        ``host:port``) and the concentrator (to its listener at ``host:concentrator_port``)."""
        if self.concentrator is not None:
            self.concentrator.spec = replace(self.concentrator.spec, host=host, port=concentrator_port)
            await self.concentrator.start()
        for bus in self.buses:
            if bus.dial_in:
                spec = DtuSpec(
                    bus.dial_in,
                    host,
                    port,
                    heartbeat=DTU_HEARTBEAT,
                    heartbeat_s=5.0,
                    backoff_s=0.5,
                    seed=bus.spec.seed,
                )
                self.dtus.append(await SimDtu(spec, self.running[bus.channel]).start())

    async def stop(self) -> None:
        """Stop every DTU and running bus."""
        dtus, self.dtus = self.dtus, []
        await asyncio.gather(*(dtu.stop() for dtu in dtus), return_exceptions=True)
        concentrator, self.concentrator = self.concentrator, None
        if concentrator is not None:
            await concentrator.stop()
        running, self.running = self.running, {}
        await asyncio.gather(*(bus.stop() for bus in running.values()), return_exceptions=True)

    @property
    def story_meter(self) -> Any:
        """The simulated meter of the fee-control story (first meter of the DL/T 645-2007 bus)."""
        return self.running[self.buses[0].channel].meters[0]

    def inventory(self, installed_at: datetime) -> Inventory:
        """Channels and meters for ``import_inventory``; the story meter belongs to the story account.

        ``installed_at`` before now means the head-end takes over meters already in the field: the
        intervals since then are gaps, backfilled from the meters' load profiles where they keep one.
        """
        channels, meters = [], []
        for bus in self.buses:
            sim = self.running[bus.channel]
            url = f"dtu://{bus.dial_in}" if bus.dial_in else sim.url
            channels.append(ChannelEntry(name=bus.channel, url=url + bus.url_options))
            for index, meter in enumerate(sim.meters):
                story = bus is self.buses[0] and index == 0
                address = str(meter.unit_id) if bus.protocol == "modbus" else meter.address
                meters.append(
                    MeterEntry(
                        channel=bus.channel,
                        protocol=bus.protocol,
                        address=address,
                        model=bus.model,
                        name=f"{bus.channel}/{index + 1}",
                        account=STORY_ACCOUNT if story else None,
                        has_relay=story or bus.model == "hiking_dds238_2_znsr",
                        installed_at=installed_at,
                        # the nameplate number a meter behind a DTU proves itself with (else suspect)
                        meter_number=str(meter.model.meter_number)
                        if bus.dial_in and bus.protocol == "dlt645-2007"
                        else None,
                    )
                )
        if self.concentrator is not None:
            channels.append(ChannelEntry(name=CONCENTRATOR_CHANNEL, url=f"gdw1376://{CONCENTRATOR_ADDRESS}"))
            pool = self.concentrator.pool
            for pn, record in sorted(pool.archive.items()):
                meters.append(
                    MeterEntry(
                        channel=CONCENTRATOR_CHANNEL,
                        protocol="dlt645-2007",
                        address=record.address,
                        model="dlt645-generic",
                        name=f"{CONCENTRATOR_CHANNEL}/{pn}",
                        port=record.port,
                        pn=pn,
                        installed_at=installed_at,
                    )
                )
        return Inventory(channels, meters)
