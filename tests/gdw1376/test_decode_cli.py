"""`headend decode` on 1376.1 frames through the console entry point: auto-detection, JSON, and the
forwarded DL/T 645 frame decoded inside."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import CliResult, headend

CORPUS = json.loads((Path(__file__).with_name("data") / "gdw1376_frames_public.json").read_text())


def run_decode(*args: str) -> CliResult:
    return headend("decode", *args)


def test_json_of_a_login_with_preamble_and_spaces() -> None:
    result = run_decode("--json", "FE FE " + " ".join(CORPUS[0]["hex"][i : i + 2] for i in range(0, 40, 2)))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["protocol"], out["direction"], out["address"], out["afn_name"]) == (
        "1376.1",
        "up",
        "0314-25394",
        "LINK_TEST",
    )
    assert out["units"] == [{"pn": 0, "fn": 1, "name": "login", "unit": None, "value": None}]
    assert out["stopped"] is None


def test_forwarded_meter_reply_is_decoded_inside() -> None:
    out = json.loads(run_decode("--json", CORPUS[7]["hex"]).stdout)
    assert out["afn_name"] == "FORWARD" and out["ec"] == [79, 0]
    (forwarded,) = out["forwarded"]
    assert forwarded["port"] == 31
    assert forwarded["dlt645"]["di"] == "00010000" and forwarded["dlt645"]["value"] == 6.78


def test_human_output_shows_both_frames() -> None:
    result = run_decode(CORPUS[6]["hex"])
    assert result.returncode == 0, result.stderr
    assert "Q/GDW 1376.1 frame" in result.stdout and "DL/T 645 frame" in result.stdout
    assert "151230011061" in result.stdout


def test_a_bad_checksum_is_a_one_line_error() -> None:
    raw = CORPUS[0]["hex"][:-4] + "EC16"
    result = run_decode(raw)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: checksum mismatch: computed 0xEB, frame has 0xEC"


def test_dlt645_frames_still_go_to_the_dlt645_decoder() -> None:
    out = json.loads(run_decode("--json", "6861010000000068910833333433593333338A16").stdout)
    assert out["edition"] == "2007" and out["value"] == 0.26


def test_a_dlt645_frame_whose_address_looks_like_a_1376_header_stays_dlt645() -> None:
    # address 686801010101 puts 68 01 01 01 01 68 at the start: doubled L, protocol id 01, second 68
    out = json.loads(run_decode("--json", "68010101016868681104333334338616").stdout)
    assert out["address"] == "686801010101" and out["di"] == "00010000"
