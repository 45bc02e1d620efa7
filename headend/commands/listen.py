"""``headend listen``: print every device that dials in (the check "is my DTU reaching the master?").

Also where the field commands start a listener for a device that dials in (``dtu://ID`` or
``gdw1376://ADDRESS`` with ``--listen HOST:PORT``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

import typer

from headend.transport import (
    Channel,
    ChannelConfig,
    ConcentratorLink,
    DialinChannel,
    DialinHub,
    ModbusChannel,
    open_channel,
    parse_channel_url,
)
from headend.transport.concentrator_dialin import DialinConcentratorLink
from headend.transport.hub import HubEvent
from headend.transport.identify import KINDS, RegistrationFormat, parse_pattern
from headend.transport.listener import Inbound, Listener, ListenerSpec

Listen = Annotated[
    str | None,
    typer.Option(
        "--listen",
        help="For dtu://ID or gdw1376://ADDRESS: listen on HOST:PORT and wait for the device to dial in.",
    ),
]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the device to dial in.")]
Heartbeat = Annotated[str, typer.Option("--heartbeat-packet", help="Heartbeat bytes: text or hex:....")]


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raises ValueError with the offending text."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"want HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class ListeningChannel(DialinChannel):
    """A dial-in channel with the listener it started (the field commands' ``--listen``)."""

    def __init__(self, config: ChannelConfig, hub: DialinHub, wait_s: float, listener: Listener) -> None:
        super().__init__(config, hub, wait_s)
        self.listener = listener

    async def close(self) -> None:
        await super().close()
        await self.listener.stop()


class ListeningConcentratorLink(DialinConcentratorLink):
    """A dial-in concentrator's link with the listener it started (the field commands' ``--listen``)."""

    def __init__(self, config: ChannelConfig, hub: DialinHub, wait_s: float, listener: Listener) -> None:
        super().__init__(config, hub, wait_s)
        self.listener = listener

    async def close(self) -> None:
        await super().close()
        await self.listener.stop()


async def open_field_channel(
    url: str, listen: str | None, wait_s: float, heartbeat: str = "", retries: int | None = None
) -> Channel | ModbusChannel | ConcentratorLink:
    """The channel for a field command; for a device that dials in (``dtu://``, ``gdw1376://``) a
    listener on ``listen`` is started first (``retries``: instead of the URL's, e.g. 0 for a sweep
    where silence is the answer)."""
    config = parse_channel_url(url)
    if retries is not None:
        config = replace(config, retries=retries)
    if config.device is None:
        if listen:
            raise ValueError("--listen is only for channels whose device dials in (dtu://, gdw1376://)")
        return open_channel(url)
    if not listen:
        raise ValueError(f"{config.label} dials in: give --listen HOST:PORT to wait for it")
    host, port = host_port(f"0.0.0.0{listen}" if listen.startswith(":") else listen)
    kind, _identity = config.device
    hub = DialinHub()  # refuses every other device: only this channel's is expected
    spec = ListenerSpec(host=host, port=port, kind=kind, heartbeat=parse_pattern(heartbeat))
    try:
        listener = await Listener(spec, hub).start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"cannot listen on {listen}: the port is in use, most likely by a running daemon"
                " (headend run) that holds this device's connection; a field command reaches the device"
                " only while nothing else listens there"
            ) from None
        raise ValueError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    if kind == "gdw1376":
        return ListeningConcentratorLink(config, hub, wait_s, listener)
    return ListeningChannel(config, hub, wait_s, listener)


def listen_command(
    address: Annotated[str, typer.Argument(help="HOST:PORT to listen on, e.g. 0.0.0.0:9000.")],
    kind: Annotated[
        str, typer.Option("--kind", help="What dials in: dtu, or gdw1376 (concentrators, by login).")
    ] = "dtu",
    heartbeat: Heartbeat = "",
    id_format: Annotated[str, typer.Option("--id-format", help="Registration id: ascii or hex.")] = "ascii",
    id_length: Annotated[int, typer.Option("--id-length", min=0, help="Fixed id length in bytes.")] = 0,
    id_delimiter: Annotated[str, typer.Option("--id-delimiter", help="Bytes ending the id.")] = "",
    id_prefix: Annotated[str, typer.Option("--id-prefix", help="Bytes before the id.")] = "",
    seconds: Annotated[float, typer.Option("--for", help="Stop after this many seconds (0: Ctrl-C).")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line and event.")] = False,
) -> None:
    """Print every device that dials in: identity, peer, time, heartbeats (nothing is sent to it but a
    1376.1 concentrator's login and heartbeat confirmations)."""
    try:
        if kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}")
        if id_format not in ("ascii", "hex"):
            raise ValueError("--id-format must be ascii or hex")
        host, port = host_port(address)
        spec = ListenerSpec(
            host=host,
            port=port,
            kind=kind,
            heartbeat=parse_pattern(heartbeat),
            registration=RegistrationFormat(
                id_format,  # type: ignore[arg-type]
                id_length,
                parse_pattern(id_delimiter),
                parse_pattern(id_prefix),
            ),
        )
        asyncio.run(_listen(spec, seconds, as_json))
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


async def _listen(spec: ListenerSpec, seconds: float, as_json: bool) -> None:
    hub = DialinHub(unknown="hold")  # nothing is expected: every device is shown and kept connected

    def show(event: HubEvent, inbound: Inbound) -> None:
        record = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "event": event,
            "identity": inbound.identity,
            "peer": inbound.peer,
            "heartbeats": inbound.heartbeats,
        }
        if event == "closed":
            record["reason"] = inbound.close_reason
        if as_json:
            typer.echo(json.dumps(record))
        elif event != "identified":
            detail = f" ({inbound.close_reason})" if event == "closed" else ""
            typer.echo(
                f"{record['time']}  {event:<9} {inbound.identity or '?':<24} {inbound.peer:<22} "
                f"heartbeats {inbound.heartbeats}{detail}"
            )

    hub.observer = show
    listener = await Listener(spec, hub).start()
    if not as_json:
        typer.echo(f"listening on {spec.host}:{listener.port} for {spec.kind} devices (Ctrl-C to stop)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if seconds:
            async with asyncio.timeout(seconds):
                await stop.wait()
        else:
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        await listener.stop()
        if not as_json:
            counts = {k: v for k, v in sorted(hub.counts.items()) if v}
            typer.echo(f"counts: {counts}", err=True)


def register(app: typer.Typer) -> None:
    """Attach ``listen`` to the CLI."""
    app.command("listen")(listen_command)
