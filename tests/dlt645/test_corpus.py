"""Every frame of the public corpus decodes to the meaning its source states.

The corpus (`data/dlt645_frames_public.json`, a copy of the team's reference corpus) was collected from
independent sources;
each entry's ``meaning`` text names the edition, control byte, address, length, preamble, DI and the
value. These tests parse that text and compare it with what the codec decodes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from protocols.dlt645 import ChecksumError, Frame, decode

CORPUS_PATH = Path(__file__).with_name("data") / "dlt645_frames_public.json"
CORPUS = json.loads(CORPUS_PATH.read_text())
VALID = [entry for entry in CORPUS if entry["verified_checksum"]]
BAD_CHECKSUM = [entry for entry in CORPUS if not entry["verified_checksum"]]

HEADER = re.compile(
    r"(?P<edition>\d{4}) (?P<direction>request|response) "
    r"C=0x(?P<control>[0-9A-F]{2}) fn=0x(?P<fn>[0-9A-F]{2})"
    r"(?P<abnormal> ABNORMAL)? addr=(?P<addr>\w{12}) L=(?P<length>\d+) preamble=(?P<preamble>\d)"
)
NUMBER_WITH_UNIT = re.compile(
    r"= (?P<numbers>-?[\d.]+(?:, -?[\d.]+)*) ?(?P<unit>kWh|kvarh|kvar|kVA|V|A|Hz)?$"
)


def _id(entry: dict) -> str:
    return entry["hex"][:40]


@pytest.mark.parametrize("entry", VALID, ids=_id)
def test_header_fields_match_the_stated_meaning(entry: dict) -> None:
    frame = decode(bytes.fromhex(entry["hex"]))
    header = HEADER.match(entry["meaning"])
    assert header, entry["meaning"]
    assert frame.edition == int(header["edition"])
    assert frame.is_response == (header["direction"] == "response")
    assert frame.control == int(header["control"], 16)
    assert frame.function == int(header["fn"], 16)
    assert frame.is_abnormal == bool(header["abnormal"])
    assert frame.address == header["addr"]
    assert len(frame.payload) == int(header["length"])
    raw = bytes.fromhex(entry["hex"])
    preamble = int(header["preamble"])
    assert raw[:preamble] == b"\xfe" * preamble and raw[preamble] == 0x68


@pytest.mark.parametrize("entry", [e for e in VALID if "DI=" in e["meaning"]], ids=_id)
def test_data_identifier_matches(entry: dict) -> None:
    frame = decode(bytes.fromhex(entry["hex"]))
    stated = re.search(r"DI=([0-9A-F]+)", entry["meaning"])[1]
    assert frame.di == stated


def _stated_value_text(meaning: str) -> str:
    """The part after the last '; ' (the value statement), e.g. 'forward active total = 0.01 kWh'."""
    return meaning.split("; ")[-1]


@pytest.mark.parametrize(
    "entry",
    [
        e
        for e in VALID
        if e["direction"] == "response"
        and NUMBER_WITH_UNIT.search(_stated_value_text(e["meaning"]))
        and "number" not in e["meaning"]
    ],
    ids=_id,
)
def test_numeric_values_match(entry: dict) -> None:
    frame = decode(bytes.fromhex(entry["hex"]))
    match = NUMBER_WITH_UNIT.search(_stated_value_text(entry["meaning"]))
    numbers = [float(n) for n in match["numbers"].split(", ")]
    values = frame.value if isinstance(frame.value, list) else [frame.value]
    assert values == pytest.approx(numbers)
    if match["unit"]:
        assert frame.unit == match["unit"]


def _entry(fragment: str) -> Frame:
    matches = [e for e in CORPUS if fragment in e["meaning"]]
    assert matches, fragment
    return decode(bytes.fromhex(matches[0]["hex"]))


def test_date_time_and_address_values() -> None:
    assert _entry("DI=C011; time 22:22:04").value == dt.time(22, 22, 4)
    assert _entry("DI=C010; date 2019-07-06").value == dt.date(2019, 7, 6)
    assert _entry("broadcast time 2017-06-05 10:40:25").value == dt.datetime(2017, 6, 5, 10, 40, 25)
    assert _entry("meter number = 002241020208").value == "002241020208"
    assert _entry("address=001210174069").value == "001210174069"
    assert _entry("address=002241020208").value == "002241020208"


def test_write_requests_expose_password_operator_and_value() -> None:
    date_write = _entry("value(raw LE)=04100518; date 2018-05-10")
    assert date_write.fields["password_level"] == 2
    assert date_write.fields["password"] == "101010"
    assert date_write.fields["operator"] == "11111111"
    assert date_write.value == dt.date(2018, 5, 10)
    time_write = _entry("time 15:08:55")
    assert time_write.value == dt.time(15, 8, 55)
    unscrambled_password = _entry("password CDCDCDCD data 06060719")
    assert unscrambled_password.fields["password_level"] == 0xCD
    assert unscrambled_password.fields["password"] == "CDCDCD"
    assert unscrambled_password.value == dt.date(2019, 7, 6)


def test_remote_control_requests() -> None:
    close = _entry("N1=0x1B close-allowed")
    assert close.fields["action"] == "close_allowed"
    assert close.fields["password_level"] == 2
    assert close.fields["password"] == "020637"
    assert close.fields["operator"] == "00000001"
    assert close.fields["expiry"] == dt.datetime(2099, 12, 30, 0, 0, 0)
    trip = _entry("N1=0x1A trip")
    assert trip.fields["action"] == "trip"
    assert trip.fields["password"] == "000000"
    assert trip.fields["expiry"] == dt.datetime(2018, 5, 12, 15, 41, 24)


def test_error_words_are_decoded_after_unscrambling() -> None:
    assert _entry("ERR=0x02 (no requested data)").error_flags == ["no_data"]
    assert _entry("ERR=0x02 (data identifier error)").error_flags == ["di_error"]
    assert _entry("ERR=0x04 (password error)").error_flags == ["password"]
    all_bits = _entry("ERR=0xFE")
    assert all_bits.error_flags == [
        "no_data",
        "password",
        "baud",
        "year_zones",
        "day_slots",
        "tariffs",
        "reserved",
    ]


def test_negative_baud_word_is_reported_not_crashed() -> None:
    frame = _entry("baud code 0xD5")
    assert frame.value == 0xD5
    assert frame.unit is None  # the raw word is not a rate in bit/s
    assert "0xD5" in frame.fields["value_error"]


def test_acks_and_address_requests() -> None:
    assert _entry("L=0 preamble=4; data=").payload == b""
    assert _entry("control ack").is_response
    wildcard = _entry("addr=AAAAAAAAAAAA L=0 preamble=4; read comm address")
    assert wildcard.function == 0x13 and not wildcard.is_response


@pytest.mark.parametrize("entry", BAD_CHECKSUM, ids=_id)
def test_bad_checksum_frames_are_rejected(entry: dict) -> None:
    with pytest.raises(
        ChecksumError, match=r"checksum mismatch: computed 0x[0-9A-F]{2}, frame has 0x[0-9A-F]{2}"
    ):
        decode(bytes.fromhex(entry["hex"]))


def test_corpus_is_complete_enough() -> None:
    assert len(VALID) >= 60
    assert len(BAD_CHECKSUM) >= 2
