"""Link layer: framing by length, preamble, resync after noise, echo suppression, address rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlt645 import (
    ChecksumError,
    Deframer,
    EncodeError,
    FramingError,
    TruncatedFrame,
    build_read,
    build_read_response,
    decode,
    encode_frame,
    parse_link,
    scramble,
    unscramble,
)

# Checksum byte equal to 0x16 and data bytes 0x16/0x68/0xFE inside the frame (corpus frame).
CS_IS_16 = bytes.fromhex("6861010000000068910733333735647633A916")
TRICKY = bytes.fromhex("68610100000000689107333338353983338C16")


def test_scrambling_is_mod_256_both_ways() -> None:
    assert scramble(bytes([0x00, 0xCD, 0xFF])) == bytes([0x33, 0x00, 0x32])
    assert unscramble(scramble(bytes(range(256)))) == bytes(range(256))


def test_address_is_low_byte_first_and_padded() -> None:
    frame = encode_frame("161", 0x11, b"", preamble=0)
    assert frame[1:7] == bytes.fromhex("610100000000")
    assert parse_link(frame).address == "000000000161"
    with pytest.raises(EncodeError, match="12 digits"):
        encode_frame("12345678901234", 0x11)


def test_request_has_four_fe_and_reply_any_number() -> None:
    request = build_read("000000000161", "00010000")
    assert request.startswith(b"\xfe" * 4) and request[4] == 0x68
    reply = build_read_response("000000000161", "00010000", 0.26)
    for count in (0, 1, 2, 4, 9):
        assert decode(b"\xfe" * count + reply).value == 0.26


def test_frame_with_checksum_0x16_is_framed_by_length() -> None:
    deframer = Deframer()
    frames = deframer.feed(CS_IS_16 + TRICKY)
    assert frames == [CS_IS_16, TRICKY]


def test_noise_68_68_before_frame_resyncs() -> None:
    deframer = Deframer()
    frames = deframer.feed(b"\x68\x68\x00\x11\x68" + TRICKY)
    assert frames == [TRICKY]
    assert deframer.noise_bytes == 5


def test_truncated_frame_followed_by_a_whole_one() -> None:
    deframer = Deframer()
    frames = deframer.feed(TRICKY[:9] + TRICKY)
    assert frames == [TRICKY]


def test_corrupted_checksum_is_counted_and_skipped() -> None:
    bad = bytearray(TRICKY)
    bad[-2] ^= 0x01
    deframer = Deframer()
    assert deframer.feed(bytes(bad) + TRICKY) == [TRICKY]
    assert deframer.checksum_errors == 1


def test_echo_of_own_request_is_dropped_once() -> None:
    request = build_read("000000000161", "00010000")
    reply = build_read_response("000000000161", "00010000", 12.5)
    deframer = Deframer()
    deframer.expect_echo(request)
    assert deframer.feed(request + reply) == [reply]
    assert deframer.echoes_dropped == 1
    assert deframer.feed(request[4:]) == [request[4:]]


def test_remainder_is_kept_between_feeds() -> None:
    deframer = Deframer()
    assert deframer.feed(TRICKY[:5]) == []
    assert deframer.pending == 5
    assert deframer.feed(TRICKY[5:] + TRICKY[:3]) == [TRICKY]
    assert deframer.pending == 3
    deframer.reset()
    assert deframer.pending == 0


@settings(max_examples=300, deadline=None)
@given(
    noise=st.lists(st.binary(max_size=12).filter(lambda b: 0x68 not in b), min_size=3, max_size=3),
    cuts=st.lists(st.integers(min_value=1, max_value=80), max_size=30),
)
def test_any_chunking_yields_the_same_frames(noise: list[bytes], cuts: list[int]) -> None:
    stream = noise[0] + b"\xfe\xfe" + CS_IS_16 + noise[1] + TRICKY + noise[2] + b"\xfe" + CS_IS_16
    deframer = Deframer()
    frames: list[bytes] = []
    pos = 0
    for cut in cuts:
        frames += deframer.feed(stream[pos : pos + cut])
        pos += cut
    frames += deframer.feed(stream[pos:])
    assert frames == [CS_IS_16, TRICKY, CS_IS_16]


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"", TruncatedFrame, "empty input"),
        (b"\x00" + TRICKY, FramingError, "must start with 0x68"),
        (TRICKY[:10], TruncatedFrame, "at least 12"),
        (TRICKY[:-3], TruncatedFrame, "length byte says 7 data bytes, 6 present"),
        (TRICKY[:7] + b"\x00" + TRICKY[8:], FramingError, "second start byte"),
        (TRICKY[:-1] + b"\x17", FramingError, "end byte 0x16 missing"),
        (TRICKY + b"\x00", FramingError, "1 trailing bytes"),
        (TRICKY[:-2] + bytes([TRICKY[-2] ^ 0xFF, 0x16]), ChecksumError, "checksum mismatch"),
    ],
)
def test_bad_frames_raise_precise_errors(raw: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode(raw)
