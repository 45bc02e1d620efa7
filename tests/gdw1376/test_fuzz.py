"""Fuzzing: random and mutated inputs through the deframer and the decoder.

Only the codec's own error types may come out; the deframer consumes or keeps every byte. Half of
the mutated frames get their L copies, checksum and end byte repaired so that the unit parsers, not
just the link checks, see the damage.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.gdw1376 import Deframer, GDW1376Error, decode, encode
from tests.gdw1376.strategies import frames

CORPUS = json.loads((Path(__file__).with_name("data") / "gdw1376_frames_public.json").read_text())
RANDOM_INPUTS = 30_000
MUTATED_INPUTS = 60_000


def _seeds() -> list[bytes]:
    seeds = [bytes.fromhex(e["hex"]).lstrip(b"\xfe") for e in CORPUS]
    generated = st.lists(frames(), min_size=40, max_size=40)

    @settings(max_examples=1, database=None, suppress_health_check=list(HealthCheck))
    @given(generated)
    def collect(batch: list) -> None:
        seeds.extend(encode(f) for f in batch)

    collect()
    return seeds


def _repair(frame: bytearray) -> None:
    if len(frame) < 16:
        return
    n = len(frame) - 8
    word = ((n << 2) | 2).to_bytes(2, "little")
    frame[0], frame[5] = 0x68, 0x68
    frame[1:3] = frame[3:5] = word
    frame[-2] = sum(frame[6:-2]) & 0xFF
    frame[-1] = 0x16


def _decode_quietly(raw: bytes) -> None:
    with contextlib.suppress(GDW1376Error):
        decode(raw)


def test_random_bytes_raise_only_codec_errors() -> None:
    rng = random.Random(1376)
    deframer = Deframer()
    for _ in range(RANDOM_INPUTS):
        chunk = rng.randbytes(rng.randrange(0, 64))
        _decode_quietly(chunk)
        for frame in deframer.feed(chunk):
            _decode_quietly(frame)
    assert deframer.pending < 64 * 1024


def test_mutated_frames_raise_only_codec_errors() -> None:
    rng = random.Random(13761)
    seeds = _seeds()
    deframer = Deframer()
    decoded = 0
    for i in range(MUTATED_INPUTS):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(3)
            pos = rng.randrange(len(frame))
            if kind == 0:
                frame[pos] = rng.randrange(256)
            elif kind == 1 and len(frame) > 16:
                del frame[pos]
            else:
                frame.insert(pos, rng.randrange(256))
        if i % 2:
            _repair(frame)
        try:
            decode(bytes(frame))
            decoded += 1
        except GDW1376Error:
            pass
        for out in deframer.feed(bytes(frame)):
            _decode_quietly(out)
    assert decoded > MUTATED_INPUTS // 20  # the repaired half reaches the unit parsers
