"""`headend decode` through the installed console entry point."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import CliResult, headend


def run_decode(*args: str) -> CliResult:
    return headend("decode", *args)


def test_json_output_of_a_read_reply_with_spaces_and_preamble() -> None:
    result = run_decode("--json", "FE FE 68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["edition"] == "2007"
    assert out["address"] == "000000000161"
    assert out["function"] == 0x11
    assert out["direction"] == "response"
    assert (out["abnormal"], out["followup"]) == (False, False)
    assert out["di"] == "00010000"
    assert out["name"] == "forward_active_energy_total"
    assert out["value"] == 0.26 and out["unit"] == "kWh"
    assert out["error"] is None


def test_json_output_of_1997_and_abnormal_frames() -> None:
    old = json.loads(run_decode("--json", "6811110000000068810446E953352E16").stdout)
    assert (old["edition"], old["di"], old["value"], old["unit"]) == ("1997", "B613", 220, "V")
    abnormal = json.loads(run_decode("--json", "6812907856341268D101358D16").stdout)
    assert abnormal["abnormal"] is True and abnormal["error"] == ["no_data"]


def test_human_output_is_a_table() -> None:
    result = run_decode("68611001301215681C10356A3935343333334E333333336345CC2D16")
    assert result.returncode == 0
    assert "close_allowed" in result.stdout and "2099-12-30" in result.stdout


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("680172007200006891083333343333333333E816", "checksum mismatch: computed 0xE7, frame has 0xE8"),
        ("68 61 01 00 00", "frame truncated"),
        ("68 6X", "not a hex digit"),
        ("686", "odd number of hex digits"),
    ],
)
def test_bad_frames_exit_non_zero_with_a_precise_message(frame: str, message: str) -> None:
    result = run_decode(frame)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
