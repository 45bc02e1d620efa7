"""The 1376.1 link layer: length rule, checksum and the stream deframer's resync after noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols.gdw1376 import ChecksumError, Deframer, FramingError, TruncatedFrame, parse_link
from protocols.gdw1376.link import encode_link

CORPUS = json.loads((Path(__file__).with_name("data") / "gdw1376_frames_public.json").read_text())
LOGIN = bytes.fromhex(CORPUS[0]["hex"])
FORWARD = bytes.fromhex(CORPUS[6]["hex"])


def test_encode_link_doubles_the_length_with_the_protocol_id() -> None:
    raw = encode_link(LOGIN[6:-2])
    assert raw == LOGIN
    assert raw[1:5] == bytes.fromhex("32003200")  # 12 << 2 | 0b10


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda b: b[:-3], TruncatedFrame),
        (lambda b: b[:3] + b"\x33" + b[4:], FramingError),  # the two L copies differ
        (lambda b: b[:1] + b"\x33\x00\x33\x00" + b[5:], FramingError),  # protocol id 11
        (lambda b: b[:-2] + bytes(((b[-2] + 1) & 0xFF,)) + b[-1:], ChecksumError),
        (lambda b: b[:-1] + b"\x17", FramingError),
        (lambda b: b + b"\x00", FramingError),
    ],
)
def test_parse_link_rejects_broken_frames(mutate, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        parse_link(mutate(LOGIN))


def test_deframer_resyncs_after_noise_and_a_corrupted_frame() -> None:
    corrupted = bytearray(FORWARD)
    corrupted[20] ^= 0xFF
    stream = b"\x01\x68\x16noise" + bytes(corrupted) + LOGIN + b"\x68\x32" + FORWARD
    deframer = Deframer()
    out = [deframer.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)]
    frames = [f for chunk in out for f in chunk]
    assert frames == [LOGIN, FORWARD]
    assert deframer.checksum_errors == 1 and deframer.pending == 0
    assert deframer.noise_bytes == len(stream) - len(LOGIN) - len(FORWARD)


def test_deframer_frames_by_length_not_by_end_byte() -> None:
    # the forwarded DL/T 645 frame inside contains 0x16 and 0x68; a scanner for 0x16 would cut there
    deframer = Deframer()
    assert deframer.feed(FORWARD[:45]) == []
    assert deframer.feed(FORWARD[45:]) == [FORWARD]


def test_a_false_header_does_not_stall_a_later_frame() -> None:
    # a noise header claiming a long frame must not hold back a complete frame behind it
    deframer = Deframer()
    assert deframer.feed(bytes.fromhex("68FEFFFEFF68") + LOGIN) == [LOGIN]
