"""The raw channel over real TCP: stale bytes, a serial server closing the link, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from headend.transport import ExchangeTimeout, open_channel
from protocols.dlt645 import Deframer, build_read, build_read_response
from tests.support.waiting import wait_until

ADDRESS = "000000000161"
DI = "00010000"


async def test_stale_bytes_are_noise_and_a_closed_link_is_reopened() -> None:
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = not connections
        connections.append(1)
        while await reader.read(64):
            writer.write(build_read_response(ADDRESS, DI, 12.34))
            if first:
                await asyncio.sleep(0.05)
                writer.write(b"\x01\x02\x03")  # late garbage after the reply
                await asyncio.sleep(0.05)
                break  # then the serial server drops the link between exchanges
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = open_channel(f"tcp://127.0.0.1:{port}?gap_ms=0&retries=0&turnaround_ms=300")
    request = build_read(ADDRESS, DI)
    try:
        frame, rtt = await channel.exchange(request, Deframer(), lambda raw: True)
        assert frame.endswith(b"\x16") and rtt < 1
        link = channel._link  # the garbage arrives, then the server closes: the channel sees both
        await wait_until(lambda: link is not None and link.closed, 5, "the channel to see the link closed")
        frame, _ = await channel.exchange(request, Deframer(), lambda raw: True)
        assert len(connections) == 2
        assert channel.stats.noise_bytes == 3 and channel.stats.frames_in == 2
        with pytest.raises(ExchangeTimeout, match="timeout after 1 try"):
            await channel.exchange(request, Deframer(), lambda raw: False, turnaround_s=0.1)
        assert channel.stats.timeouts == 1 and channel.stats.unexpected_frames == 1
    finally:
        await channel.close()
        server.close()
        await server.wait_closed()
