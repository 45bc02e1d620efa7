"""``headend sim``: run simulated meter buses in the foreground (for testers, demos and benchmarks)."""

from __future__ import annotations

import asyncio
import json
import signal
import tomllib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from headend.commands.app import CommandGroup
from headend.commands.listen import host_port
from headend.transport.identify import parse_pattern
from headend.transport.url import BAUD_RATES
from protocols.gdw1376 import Address, GDW1376Error
from protocols.models import UnknownModel, load_model_data
from simulators import BusSpec, SimBus, start_bus
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from simulators.concentrator_faults import ConcentratorFaultError
from simulators.concentrator_groups import parse_groups
from simulators.conditions import MeterCondition
from simulators.dlt645_server import Dlt645Meter
from simulators.dtu import DtuFaults, DtuSpec, SimDtu
from simulators.faults import FaultSpecError
from simulators.modbus_server import ModbusBus

sim_app = CommandGroup(
    help="Run simulated meters on a TCP serial server or a virtual serial port.", no_args_is_help=True
)

BUS_FIELDS = set(BusSpec.__dataclass_fields__)


def _usage(message: str) -> NoReturn:
    """A bad option: one line on stderr, exit code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _endpoint(tcp: str | None, pty: bool) -> dict[str, Any]:
    if pty == bool(tcp):
        _usage("give exactly one of --tcp HOST:PORT or --pty")
    if pty:
        return {"transport": "pty"}
    host, _, port = (tcp or "").rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        _usage(f"--tcp wants HOST:PORT with a port 0..65535, got {tcp!r}")
    return {"transport": "tcp", "host": host, "port": int(port)}


def _baud(baud: int) -> int:
    """A line speed a channel URL accepts (the simulated line is paced at it)."""
    if baud not in BAUD_RATES:
        _usage(f"--baud must be one of {', '.join(map(str, BAUD_RATES))}, got {baud}")
    return baud


async def _run_buses(specs: list[BusSpec], as_json: bool) -> None:
    buses: list[SimBus | ModbusBus] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for spec in specs:
            buses.append(await start_bus(spec))
        descriptions = [bus.describe() for bus in buses]
        if as_json:
            typer.echo(
                json.dumps(descriptions[0] if len(descriptions) == 1 else {"buses": descriptions}), nl=True
            )
        else:
            for item in descriptions:
                typer.echo(
                    f"{item['protocol']} {item.get('edition', item.get('model'))} bus at {item['url']}: "
                    f"{len(item['meters'])} meters"
                )
                for address in item["meters"]:
                    typer.echo(f"  {address}")
        await stop.wait()
    finally:
        for bus in buses:
            await bus.stop()
        if not as_json:
            for bus in buses:
                typer.echo(
                    f"{bus.url}: requests {dict(bus.requests)}, faults {dict(bus.fault_counts)}", err=True
                )


def _start(specs: list[BusSpec], as_json: bool) -> None:
    try:
        asyncio.run(_run_buses(specs, as_json))
    except (FaultSpecError, ValueError, OSError, UnknownModel) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


@sim_app.command("dlt645")
def sim_dlt645(
    meters: Annotated[int, typer.Option(min=1, help="Meters on the bus.")] = 1,
    tcp: Annotated[
        str | None, typer.Option(help="Listen as a transparent serial server on HOST:PORT.")
    ] = None,
    pty: Annotated[
        bool, typer.Option("--pty", help="Expose a virtual serial port (prints its path).")
    ] = False,
    edition: Annotated[int, typer.Option(help="2007 or 1997.")] = 2007,
    baud: Annotated[int, typer.Option(help="Line speed for --line-timing.")] = 2400,
    frame_format: Annotated[str, typer.Option("--format", help="Character format, e.g. 8E1.")] = "8E1",
    line_timing: Annotated[
        bool, typer.Option("--line-timing", help="Release bytes at the baud rate.")
    ] = False,
    echo: Annotated[bool, typer.Option("--echo", help="Echo requests like an RS-485 adapter.")] = False,
    faults: Annotated[str, typer.Option(help="Fault spec, e.g. no_reply=0.05,offline=#0@10+30.")] = "",
    seed: Annotated[int, typer.Option(help="Seed for addresses, loads and faults.")] = 1,
    phases: Annotated[int, typer.Option(help="1 or 3.")] = 1,
    turnaround: Annotated[float, typer.Option(help="Meter response delay in seconds.")] = 0.02,
    load_scale: Annotated[
        float, typer.Option(help="Multiply consumption (make it visible in short runs).")
    ] = 1.0,
    history_days: Annotated[int, typer.Option(min=0, help="Days of load profile in memory.")] = 7,
    profile_period: Annotated[
        int, typer.Option(min=60, help="Seconds between load-profile records (whole minutes).")
    ] = 900,
    block_reads: Annotated[
        bool, typer.Option(help="Answer FF block reads (--no-block-reads: an older meter refusing them).")
    ] = True,
    condition: Annotated[
        list[str] | None,
        typer.Option(
            "--condition",
            help="INDEX:SPEC puts meter INDEX (from 0) in a condition: stopped, reversed, lost_phase=a|b|c,"
            " imbalance=0..1, bypass=0..1 (joined with +). Repeatable.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object once listening.")] = False,
) -> None:
    """Run one DL/T 645 bus in the foreground until Ctrl-C / SIGTERM."""
    if edition not in (2007, 1997):
        _usage("--edition must be 2007 or 1997")
    conditions = _conditions(condition or [], meters)
    if profile_period % 60 or 86400 % profile_period:
        _usage(f"--profile-period {profile_period}: whole minutes dividing a day, e.g. 60, 900")
    spec = BusSpec(
        protocol="dlt645",
        edition=edition,
        meters=meters,
        baud=_baud(baud),
        frame_format=frame_format,
        line_timing=line_timing,
        echo=echo,
        faults=faults,
        seed=seed,
        phases=phases,
        turnaround_s=turnaround,
        load_scale=load_scale,
        history_days=history_days,
        profile_period_s=profile_period,
        block_reads=block_reads,
        conditions=conditions,
        **_endpoint(tcp, pty),
    )
    _start([spec], as_json)


def _conditions(given: list[str], meters: int) -> dict[int, str]:
    """``--condition INDEX:SPEC`` options by meter index, each checked (one line if one is wrong)."""
    out: dict[int, str] = {}
    for item in given:
        index, _, spec = item.partition(":")
        if not index.isdigit() or int(index) >= meters:
            _usage(f"--condition {item}: INDEX:SPEC with INDEX a meter from 0 to {meters - 1}")
        try:
            MeterCondition.parse(spec)
        except ValueError as exc:
            _usage(f"--condition {item}: {exc}")
        out[int(index)] = spec
    return out


@sim_app.command("modbus")
def sim_modbus(
    model: Annotated[str, typer.Option(help="Register map in protocols/models, e.g. eastron_sdm630.")],
    meters: Annotated[int, typer.Option(min=1, max=247, help="Meters (unit ids 1..N) on the bus.")] = 1,
    tcp: Annotated[str | None, typer.Option(help="Listen on HOST:PORT.")] = None,
    pty: Annotated[
        bool, typer.Option("--pty", help="Expose a virtual serial port (RTU; prints its path).")
    ] = False,
    rtu_over_tcp: Annotated[
        bool, typer.Option("--rtu-over-tcp", help="With --tcp: RTU frames instead of MBAP.")
    ] = False,
    baud: Annotated[int, typer.Option(help="Serial speed (pty).")] = 9600,
    faults: Annotated[str, typer.Option(help="Fault spec, e.g. no_reply=0.05,corrupt=0.01.")] = "",
    seed: Annotated[int, typer.Option(help="Seed for loads and faults.")] = 1,
    load_scale: Annotated[
        float, typer.Option(help="Multiply consumption (make it visible in short runs).")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object once listening.")] = False,
) -> None:
    """Run one Modbus bus in the foreground until Ctrl-C / SIGTERM."""
    endpoint = _endpoint(tcp, pty)
    if endpoint["transport"] == "tcp":
        endpoint["transport"] = "rtu-over-tcp" if rtu_over_tcp else "modbus-tcp"
    spec = BusSpec(
        protocol="modbus",
        model=model,
        meters=meters,
        baud=_baud(baud),
        faults=faults,
        seed=seed,
        load_scale=load_scale,
        **endpoint,
    )
    _start([spec], as_json)


def dtu_ids(first: str, count: int) -> list[str]:
    """``count`` ids counting up from ``first`` (its trailing digits, kept at their width)."""
    stem = first.rstrip("0123456789")
    digits = first[len(stem) :]
    if count > 1 and not digits:
        raise typer.BadParameter(f"--id {first!r} must end in digits to number --count devices")
    start = int(digits) if digits else 0
    return [f"{stem}{start + n:0{len(digits)}d}" if digits else stem for n in range(count)]


async def _run_dtus(planned: list[tuple[DtuSpec, BusSpec]], as_json: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dtus = []
    for spec, bus_spec in planned:
        bus = SimBus(bus_spec) if bus_spec.protocol == "dlt645" else await ModbusBus(bus_spec).start()
        dtus.append(await SimDtu(spec, bus).start())
    described = [
        {
            "id": d.spec.identity,
            "connect": f"{d.spec.host}:{d.spec.port}",
            "meters": [m.address if isinstance(m, Dlt645Meter) else m.unit_id for m in d.bus.meters],
        }
        for d in dtus
    ]
    if as_json:
        typer.echo(json.dumps(described[0] if len(described) == 1 else {"dtus": described}))
    else:
        for item in described:
            typer.echo(f"DTU {item['id']} dialling {item['connect']}: {len(item['meters'])} meters")
            for address in item["meters"]:
                typer.echo(f"  {address}")
    try:
        await stop.wait()
    finally:
        for dtu in dtus:
            await dtu.stop()
            if isinstance(dtu.bus, ModbusBus):
                await dtu.bus.stop()
        totals: Counter[str] = Counter()
        for dtu in dtus:
            totals.update(dtu.counts)
        typer.echo(f"DTU counts: {dict(sorted(totals.items()))}", err=True)


@sim_app.command("dtu")
def sim_dtu(
    connect: Annotated[str, typer.Option("--connect", help="The master's listener, HOST:PORT.")],
    identity: Annotated[str, typer.Option("--id", help="Registration id (first of --count).")] = "DTU-0001",
    meters: Annotated[int, typer.Option(min=1, max=247, help="Meters on the bus behind each DTU.")] = 1,
    protocol: Annotated[str, typer.Option(help="The bus: dlt645 or modbus (RTU).")] = "dlt645",
    model: Annotated[str, typer.Option(help="Modbus register map in protocols/models.")] = "eastron_sdm120",
    count: Annotated[int, typer.Option(min=1, help="DTUs to run (ids count up).")] = 1,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.01, help="Seconds between heartbeats.")
    ] = 30.0,
    heartbeat_packet: Annotated[str, typer.Option(help="Heartbeat bytes: text or hex:....")] = "HB",
    registration: Annotated[
        str, typer.Option(help="Registration packet (text or hex:...; {id} is the id).")
    ] = "{id}",
    line_timing: Annotated[
        bool, typer.Option("--line-timing", help="Release bytes at the baud rate.")
    ] = False,
    baud: Annotated[int, typer.Option(help="Line speed behind the DTU.")] = 2400,
    backoff: Annotated[
        float, typer.Option(min=0.01, help="First redial delay after a drop (doubles).")
    ] = 1.0,
    faults: Annotated[
        str,
        typer.Option(
            help="DTU faults: drop_mid_reply=R, heartbeat_mid_reply=R, duplicate=S, late_registration=S, "
            "garbage_before=N."
        ),
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed for addresses, loads and faults.")] = 1,
    history_days: Annotated[int, typer.Option(min=0, help="Days of load profile in memory.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object once started.")] = False,
) -> None:
    """Run simulated cellular DTUs that dial in, register, send heartbeats and carry a meter bus."""
    try:
        host, port = host_port(connect)
        dtu_faults = DtuFaults.parse(faults)
        beat = parse_pattern(heartbeat_packet)
        if protocol not in ("dlt645", "modbus"):
            raise ValueError("--protocol must be dlt645 or modbus")
        planned = []
        for n, dtu_id in enumerate(dtu_ids(identity, count)):
            bus_spec = BusSpec(
                protocol=protocol,
                model=model if protocol == "modbus" else "",
                meters=meters,
                seed=seed + n,
                transport="carried" if protocol == "dlt645" else "rtu-over-tcp",
                baud=baud,
                line_timing=line_timing,
                history_days=history_days,
            )
            packet = parse_pattern(registration.replace("{id}", dtu_id))
            spec = DtuSpec(
                dtu_id, host, port, packet, beat, heartbeat, backoff, faults=dtu_faults, seed=seed + n
            )
            planned.append((spec, bus_spec))
        asyncio.run(_run_dtus(planned, as_json))
    except (FaultSpecError, ValueError, UnknownModel, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


@sim_app.command("fleet")
def sim_fleet(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="TOML file with [[bus]] tables.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object once listening.")] = False,
) -> None:
    """Start many buses from a TOML file (each ``[[bus]]`` table takes BusSpec fields)."""
    try:
        document = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    specs = []
    for index, table in enumerate(document.get("bus", [])):
        unknown = set(table) - BUS_FIELDS
        if unknown:
            typer.echo(f"error: {file}: bus[{index}]: unknown keys {sorted(unknown)}", err=True)
            raise typer.Exit(code=2)
        try:
            specs.append(_fleet_bus(table))
        except (UnknownModel, TypeError, ValueError) as exc:
            typer.echo(f"error: {file}: bus[{index}]: {exc}", err=True)
            raise typer.Exit(code=2) from None
    if not specs:
        typer.echo(f"error: {file}: no [[bus]] tables", err=True)
        raise typer.Exit(code=2)
    _start(specs, as_json)


FLEET_MODBUS_MODEL = "eastron_sdm120"


def _fleet_bus(table: dict[str, Any]) -> BusSpec:
    """A ``[[bus]]`` table as a bus: a Modbus bus defaults to Modbus TCP, the SDM120 model and the
    model's own line settings (a DL/T 645 bus to a TCP serial server at 2400 baud 8E1)."""
    if table.get("protocol") == "modbus":
        model = str(table.get("model") or FLEET_MODBUS_MODEL)
        defaults = load_model_data(model).get("defaults", {})
        table = {
            "transport": "modbus-tcp",
            "baud": defaults.get("baud", 9600),
            "frame_format": defaults.get("frame_format", "8N1"),
            **table,
            "model": model,
        }
    return BusSpec(**table)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"want HOST:PORT, got {text!r}")
    return host, int(port)


async def _run_concentrators(specs: list[ConcentratorSpec], as_json: bool) -> None:
    sims = [SimConcentrator(spec) for spec in specs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for sim in sims:
            await sim.start()
        descriptions = [sim.describe() for sim in sims]
        if as_json:
            typer.echo(json.dumps(descriptions[0] if len(sims) == 1 else {"concentrators": descriptions}))
        else:
            for item in descriptions:
                where = (
                    f"dialling {item['connect']}" if "connect" in item else f"listening on {item['listen']}"
                )
                meters_text = f"{len(item['meters'])} meters on {item['ports']} ports"
                typer.echo(f"concentrator {item['address']} {where}: {meters_text}")
                for meter in item["meters"]:
                    typer.echo(f"  p{meter['pn']} port {meter['port']} {meter['address']}")
        await stop.wait()
    finally:
        for sim in sims:
            await sim.stop()
        if not as_json:
            for sim in sims:
                typer.echo(f"{sim.address}: {dict(sim.counts)}, faults {dict(sim.faults.counts)}", err=True)


@sim_app.command("concentrator")
def sim_concentrator(
    connect: Annotated[str | None, typer.Option(help="Master station to dial, HOST:PORT.")] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="Be a fixed-address terminal: wait for the master on HOST:PORT (PORT+i for --count)."
        ),
    ] = None,
    address: Annotated[
        str, typer.Option(help="Region-terminal (0314-25394) or 8 hex digits.")
    ] = "0314-25394",
    meters: Annotated[int, typer.Option(min=1, max=2040, help="DL/T 645 meters behind it.")] = 32,
    ports: Annotated[int, typer.Option(min=1, max=31, help="RS-485 ports the meters are spread over.")] = 2,
    heartbeat: Annotated[float, typer.Option(min=0.1, help="Seconds between heartbeats.")] = 60.0,
    latency_ms: Annotated[float, typer.Option(min=0, help="Delay before every answer (network).")] = 300.0,
    faults: Annotated[
        str,
        typer.Option(
            help="Faults, e.g. lost=0.1,late=0.05,drop=30,relogin=20,power_cut=10+20,ee=#3,absent=#5."
        ),
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed for meter addresses, loads and faults.")] = 1,
    baud: Annotated[int, typer.Option(help="The meters' line speed.")] = 2400,
    count: Annotated[
        int, typer.Option(min=1, help="Run this many concentrators (consecutive terminal addresses).")
    ] = 1,
    history_days: Annotated[
        int, typer.Option(min=0, help="Days of 15-minute load profile the meters keep (curves).")
    ] = 7,
    three_phase: Annotated[
        int,
        typer.Option(min=0, help="The first N meters are three-phase (phase B/C and neutral curves)."),
    ] = 0,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file with [[total_groups]] (number, members): the AFN 04 F14 configuration."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object once started.")] = False,
) -> None:
    """Run simulated Q/GDW 1376.1 concentrators that dial in to a master station (or, with --listen, wait
    for it to connect), until Ctrl-C / SIGTERM."""
    if (connect is None) == (listen is None):
        raise typer.BadParameter("give exactly one of --connect HOST:PORT or --listen HOST:PORT")
    host, port = _host_port(connect or listen or "")
    try:
        groups = () if config is None else parse_groups(_toml(config), str(config))
        first = Address.parse(address)
        if first.terminal + count - 1 > 0xFFFF:
            raise typer.BadParameter(f"--count {count} runs past terminal address 65535")
        specs = [
            ConcentratorSpec(
                host=host,
                port=port + i if listen and port else port,
                listen=listen is not None,
                address=f"{first.region}-{first.terminal + i}",
                meters=meters,
                ports=ports,
                heartbeat_s=heartbeat,
                latency_ms=latency_ms,
                faults=faults,
                seed=seed + i,
                baud=baud,
                history_days=history_days,
                three_phase=three_phase,
                total_groups=groups,
            )
            for i in range(count)
        ]
        asyncio.run(_run_concentrators(specs, as_json))
    except (ConcentratorFaultError, GDW1376Error, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _toml(path: Path) -> dict[str, Any]:
    """A simulator config file; ValueError with one line when it cannot be read."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not TOML: {exc}") from None


def register(app: typer.Typer) -> None:
    """Attach ``sim`` to the CLI."""
    app.add_typer(sim_app, name="sim")
