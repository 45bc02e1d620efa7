"""Real 1376.1 frames from independent public sources (tests/gdw1376/data): each decodes to what its
source says it is, and re-encoding the decoded frame gives the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols import dlt645
from protocols.gdw1376 import (
    ForwardReply,
    ForwardRequest,
    RawData,
    decode,
    encode,
    looks_like_frame,
    parse_link,
)

CORPUS = json.loads((Path(__file__).with_name("data") / "gdw1376_frames_public.json").read_text())


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i}-{e['meaning'][:30]}" for i, e in enumerate(CORPUS)])
def test_public_frame_decodes_as_documented(entry: dict[str, object]) -> None:
    raw = bytes.fromhex(str(entry["hex"]))
    assert looks_like_frame(raw)
    frame = decode(raw)
    assert frame.up == (entry["direction"] == "up")
    assert frame.address.key == entry["address"]
    assert frame.afn == entry["afn"]
    assert [(pn, fn) for pn, fn, _ in frame.items()] == [(entry["pn"], entry["fn"])]
    assert frame.address.msa == entry.get("msa", frame.address.msa)
    assert frame.address.group == entry.get("group", False)
    assert (frame.tp is not None) == entry.get("tpv", False)
    assert (list(frame.ec) if frame.ec else None) == entry.get("ec")
    if "raw_data" in entry:  # a unit kind the codec keeps raw: the bytes the source annotates
        (value,) = [v for _pn, _fn, v in frame.items()]
        assert value == RawData(bytes.fromhex(str(entry["raw_data"])))
    assert encode(frame) == raw.lstrip(b"\xfe")


@pytest.mark.parametrize("entry", [e for e in CORPUS if "port" in e], ids=lambda e: e["meaning"][:30])
def test_forwarded_dlt645_frame_inside_afn10(entry: dict[str, object]) -> None:
    value = decode(bytes.fromhex(str(entry["hex"]))).value(1)
    assert isinstance(value, ForwardRequest | ForwardReply)
    assert value.port == entry["port"]
    inner = dlt645.decode(value.content)
    assert inner.address == entry["dlt645_address"]
    assert inner.di == "00010000"


def test_forward_request_line_settings_of_the_public_frame() -> None:
    request = decode(bytes.fromhex(CORPUS[6]["hex"])).value(1)
    assert isinstance(request, ForwardRequest)
    assert (request.baud, request.line_format) == (2400, "8E1")
    assert request.frame_timeout.ms == 60_000 and request.byte_timeout_ms == 100


def test_every_public_frame_has_a_consistent_doubled_length() -> None:
    for entry in CORPUS:
        raw = bytes.fromhex(entry["hex"]).lstrip(b"\xfe")
        assert raw[1:3] == raw[3:5]
        assert len(parse_link(raw).user_data) == int.from_bytes(raw[1:3], "little") >> 2
