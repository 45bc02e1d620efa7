"""A one-shot dial-in listener for the field commands (``--listen HOST:PORT``): wait for one concentrator.

It listens until the concentrator named by the link's A1+A2 sends its login (AFN 02 F1), hands that
connection to the link (``link.attach``, which confirms the login) and stops listening. Connections
from other terminals, or that send something else first, are closed. The daemon uses the shared
dial-in listener instead (headend.transport.listener); this is the same contract on a small scale.
"""

from __future__ import annotations

import asyncio
import contextlib

from headend.transport.concentrator import ConcentratorLink, ConcentratorOffline
from protocols.gdw1376 import LOGIN, Afn, Deframer, GDW1376Error, decode

FIRST_FRAME_S = 30.0  # a connection that sends no login within this time is closed


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (all addresses) for ``--listen``; ValueError names the problem."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen wants HOST:PORT or :PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def accept(link: ConcentratorLink, host: str, port: int, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``link``'s concentrator to dial in to host:port and log in."""
    bound = asyncio.Event()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deframer = Deframer()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            while not bound.is_set():
                chunk = await asyncio.wait_for(reader.read(4096), FIRST_FRAME_S)
                if not chunk:
                    break
                for raw in deframer.feed(chunk):
                    if _is_login_of(raw, link.key) and not bound.is_set():
                        link.attach(reader, writer, login=raw)
                        bound.set()
                        return
                    writer.transport.abort()  # another terminal, or not a login first
                    return
        writer.transport.abort()

    server = await asyncio.start_server(connected, host, port)
    try:
        await asyncio.wait_for(bound.wait(), timeout_s)
    except TimeoutError:
        raise ConcentratorOffline(
            f"{link.label}: did not log in on {host}:{port} within {timeout_s:g} s"
        ) from None
    finally:
        server.close()


def _is_login_of(raw: bytes, key: str) -> bool:
    try:
        frame = decode(raw)
    except GDW1376Error:
        return False
    logins = any(fn == LOGIN for _pn, fn, _v in frame.items())
    return frame.up and frame.afn == Afn.LINK_TEST and logins and frame.address.key == key
