"""Fuzzing: >= 200k random and mutated inputs through the deframer and the decoder.

Only the codec's own error types may come out; every call returns (the deframer consumes or keeps
every byte, so it cannot loop forever). Half of the mutated frames get their length, checksum and
end byte repaired so that the payload parsers, not just the checksum check, see the damage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
from pathlib import Path

from protocols.dlt645 import (
    Deframer,
    DLT645Error,
    PayloadError,
    build_control,
    build_read_profile,
    build_read_reply_frames,
    build_write,
    decode,
)

CORPUS = json.loads((Path(__file__).with_name("data") / "dlt645_frames_public.json").read_text())
RANDOM_INPUTS = 100_000
MUTATED_INPUTS = 110_000


def _seed_frames() -> list[bytes]:
    frames = [bytes.fromhex(entry["hex"]) for entry in CORPUS]
    record = {
        "time": dt.datetime(2026, 1, 1, 0, 15),
        "energy_import_kwh": 1.5,
        "energy_export_kwh": 0.0,
        "combined_reactive_1_kvarh": 0.0,
        "combined_reactive_2_kvarh": -2.0,
    }
    frames += build_read_reply_frames("000000000001", "06000001", [record] * 6, max_data=80)
    frames += build_read_reply_frames(
        "000000000001",
        "1D00FF01",
        {
            "time": dt.datetime(2026, 1, 1, 1, 2, 3),
            "operator": "00000001",
            "forward_active_kwh": 1.0,
            "reverse_active_kwh": 0.0,
            "q1_reactive_kvarh": 0.0,
            "q2_reactive_kvarh": 0.0,
            "q3_reactive_kvarh": 0.0,
            "q4_reactive_kvarh": 0.0,
        },
    )
    frames.append(build_read_profile("000000000001", "06000001", 4, dt.datetime(2026, 1, 1)))
    frames.append(
        build_control(
            "000000000001",
            "trip",
            password_level=2,
            password="123456",
            operator="1",
            expiry=dt.datetime(2026, 1, 1),
        )
    )
    frames.append(
        build_write(
            "000000000001", "04000101", dt.date(2026, 1, 1), password_level=2, password="123456", operator="1"
        )
    )
    return frames


def _repair_link(frame: bytearray) -> None:
    """Make the mutated bytes a well-formed frame again (length byte, checksum, end byte)."""
    start = frame.find(0x68)
    if start < 0 or len(frame) < start + 12 or len(frame) - start - 12 > 255:
        return
    frame[start + 7] = 0x68
    length = len(frame) - start - 12
    frame[start + 9] = length
    end = start + 10 + length
    frame[end] = sum(frame[start:end]) & 0xFF
    frame[end + 1] = 0x16


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data.insert(pos, rng.randrange(256))
        elif choice == 2 and data:
            del data[min(pos, len(data) - 1)]
        elif choice == 3:
            del data[pos:]
        elif choice == 4 and len(data) > 10:
            data[9] = rng.randrange(256)
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    if rng.random() < 0.5:
        _repair_link(data)
    return bytes(data)


def _check(raw: bytes, deframer: Deframer) -> int:
    """Feed one input to decode() and the deframer; 1 if it got past the link layer checks."""
    outcome = 0
    try:
        decode(raw)
        outcome = 1
    except PayloadError:
        outcome = 1
    except DLT645Error:
        pass
    for frame in deframer.feed(raw):
        with contextlib.suppress(DLT645Error):
            decode(frame)
    return outcome


def test_random_inputs_raise_only_codec_errors() -> None:
    rng = random.Random(645)
    deframer = Deframer()
    for _ in range(RANDOM_INPUTS):
        size = rng.randrange(40)
        raw = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.3:
            raw = b"\x68" + raw[:6] + b"\x68" + raw[6:]
        _check(raw, deframer)
    assert deframer.pending < 300


def test_mutated_frames_raise_only_codec_errors() -> None:
    rng = random.Random(2007)
    seeds = _seed_frames()
    deframer = Deframer()
    decoded = 0
    for _ in range(MUTATED_INPUTS):
        decoded += _check(_mutate(rng, rng.choice(seeds)), deframer)
    assert decoded > MUTATED_INPUTS // 20, "mutated frames should still reach the payload parsers"
    assert RANDOM_INPUTS + MUTATED_INPUTS >= 200_000
