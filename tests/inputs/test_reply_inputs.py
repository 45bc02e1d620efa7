"""Bad meter replies on a real socket: each is a counted, logged event naming the meter, and the
channel worker goes on (the next exchange with a good reply succeeds)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from headend.config import HealthConfig, TimeoutConfig
from headend.engine.health import HealthBook
from headend.engine.jobs import Job, Priority
from headend.engine.model import ChannelSpec, MeterSpec
from headend.engine.ports import DriverPort
from headend.engine.worker import ChannelWorker
from headend.metrics import EngineMetrics
from protocols.dlt645 import Deframer, build_read_response, decode
from protocols.dlt645.builders import build_abnormal
from protocols.modbus.rtu import crc16

ADDRESS = "000000000042"
DI = "00010000"  # energy_import_kwh of dlt645-generic
UNIT = 5
KWH = 1234.5
Reply = Callable[[bytes], bytes]  # request frame -> bytes sent back


def good_dlt645(_request: bytes) -> bytes:
    return build_read_response(ADDRESS, DI, KWH)


def flip_checksum(frame: bytes) -> bytes:
    return frame[:-2] + bytes((frame[-2] ^ 0xFF,)) + frame[-1:]


def rtu(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


def good_modbus(_request: bytes) -> bytes:
    return rtu(bytes((UNIT, 4, 4)) + struct.pack(">f", KWH))


# (case id, protocol, first reply, metric kind counted, outcome of the first job)
CASES: list[tuple[str, str, Reply, str, str]] = [
    ("checksum", "dlt645-2007", lambda r: flip_checksum(good_dlt645(r)), "checksum_errors", "LineError"),
    ("garbage", "dlt645-2007", lambda r: b"\x01\x02\x03\x04\x05\x06", "noise_bytes", "LineError"),
    ("noise-before-reply", "dlt645-2007", lambda r: b"\x11\x22\x33" + good_dlt645(r), "noise_bytes", "ok"),
    ("truncated", "dlt645-2007", lambda r: good_dlt645(r)[:-4], "noise_bytes", "LineError"),
    (
        "wrong-address",
        "dlt645-2007",
        lambda r: build_read_response("000000000043", DI, KWH),
        "unexpected_frames",
        "MeterTimeout",
    ),
    (
        "reply-to-another-request",
        "dlt645-2007",
        lambda r: build_read_response(ADDRESS, "00020000", KWH),
        "unexpected_frames",
        "MeterTimeout",
    ),
    (
        "stray-frame-before-reply",
        "dlt645-2007",
        lambda r: build_read_response("000000000043", DI, 1.0) + good_dlt645(r),
        "unexpected_frames",
        "ok",
    ),
    ("abnormal-reply", "dlt645-2007", lambda r: build_abnormal(ADDRESS, 0x11, 0x02), "refusals", "unread"),
    ("modbus-exception", "modbus", lambda r: rtu(bytes((UNIT, 0x84, 0x02))), "refusals", "unread"),
    ("modbus-bad-crc", "modbus", lambda r: flip_checksum(good_modbus(r)), "checksum_errors", "LineError"),
    (
        "modbus-other-unit",
        "modbus",
        lambda r: rtu(bytes((9, 4, 4)) + struct.pack(">f", KWH)),
        "noise_bytes",
        "LineError",
    ),
    ("modbus-truncated", "modbus", lambda r: good_modbus(r)[:5], "noise_bytes", "LineError"),
]


async def scripted_meter(protocol: str, first: Reply) -> tuple[asyncio.Server, int]:
    """A meter on a real socket answering its first request with ``first``, then correctly."""
    answered = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        deframer = Deframer()
        while data := await reader.read(256):
            requests = deframer.feed(data) if protocol != "modbus" else [data]
            for request in requests:
                if protocol != "modbus":
                    decode(request)  # a real DL/T 645 request
                reply = first if answered == 0 else (good_modbus if protocol == "modbus" else good_dlt645)
                answered += 1
                writer.write(reply(request))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("protocol", "first", "kind", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_reply_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture, protocol: str, first: Reply, kind: str, outcome: str
) -> None:
    server, port = await scripted_meter(protocol, first)
    spec = ChannelSpec(1, "bus-r", f"tcp://127.0.0.1:{port}?retries=0&turnaround_ms=200&gap_ms=0")
    modbus = protocol == "modbus"
    model = "eastron_sdm120" if modbus else "dlt645-generic"
    meter = MeterSpec(
        7,
        1,
        protocol,
        str(UNIT) if modbus else ADDRESS,
        UNIT if modbus else None,
        model,
        datetime.now(UTC),
        "Flat 7",
    )
    metrics = EngineMetrics()
    health = HealthBook(TimeoutConfig(initial=1.0, minimum=0.2, maximum=1.0), HealthConfig())
    port_ = DriverPort()
    worker = ChannelWorker(spec, [meter], port_.open_channel, port_.make_driver, health, metrics)

    async def read(driver: object) -> dict[str, float]:
        return await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]

    worker.start()
    caplog.set_level(logging.INFO, logger="headend.engine.worker")
    try:
        job = worker.submit(Job(Priority.SCHEDULED, meter_id=7, kind="scheduled", body=read))
        try:
            values = await job
            result = "ok" if values.get("energy_import_kwh") == pytest.approx(KWH) else "unread"
        except Exception as exc:
            result = type(exc).__name__
        assert result == outcome
        counted = metrics.registry.get_sample_value(
            "headend_line_events_total", {"channel": "bus-r", "kind": kind}
        )
        assert counted is not None and counted >= 1
        logged = [r.getMessage() for r in caplog.records if "Flat 7" in r.getMessage()]
        assert any(f"{kind.replace('_', ' ')}" in message for message in logged), logged
        again = await worker.submit(Job(Priority.SCHEDULED, meter_id=7, kind="scheduled", body=read))
        assert again["energy_import_kwh"] == pytest.approx(KWH)  # the bus goes on
    finally:
        await worker.stop()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(30)
async def test_silence_is_a_counted_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    server, port = await scripted_meter("dlt645-2007", lambda r: b"")
    spec = ChannelSpec(1, "bus-s", f"tcp://127.0.0.1:{port}?retries=0&turnaround_ms=200&gap_ms=0")
    meter = MeterSpec(8, 1, "dlt645-2007", ADDRESS, None, "dlt645-generic", datetime.now(UTC), "Flat 8")
    metrics = EngineMetrics()
    health = HealthBook(TimeoutConfig(initial=1.0, minimum=0.2, maximum=1.0), HealthConfig())
    port_ = DriverPort()
    worker = ChannelWorker(spec, [meter], port_.open_channel, port_.make_driver, health, metrics)
    worker.start()
    caplog.set_level(logging.INFO, logger="headend.engine.worker")
    try:
        job = worker.submit(
            Job(
                Priority.SCHEDULED, meter_id=8, kind="scheduled", body=lambda d: d.read(["energy_import_kwh"])
            )
        )
        with pytest.raises(Exception, match="timeout"):
            await job
        failures = metrics.registry.get_sample_value(
            "headend_read_failures_total", {"channel": "bus-s", "kind": "scheduled", "reason": "MeterTimeout"}
        )
        assert failures == 1
        assert any("Flat 8 (000000000042) job failed" in r.getMessage() for r in caplog.records)
    finally:
        await worker.stop()
        server.close()
        await server.wait_closed()
