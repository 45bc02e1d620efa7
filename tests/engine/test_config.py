"""Config validation: good files load, bad ones name the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.config import ConfigError, load_config, parse_duration
from tests.support.cli import headend

REPO = Path(__file__).resolve().parents[2]


def test_example_config_loads_with_its_values() -> None:
    config = load_config(REPO / "config" / "headend.example.toml")
    assert config.polling.interval == 900.0
    assert config.polling.offset == 5.0
    assert config.backfill.lookback == 3 * 86400
    assert config.plan_for("dlt645-generic").gap_key == "energy_import_kwh"
    assert config.plan_for("unknown-model").quantities == ["energy_import_kwh"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900.0), ("2.5s", 2.5), ("300ms", 0.3), ("1d", 86400.0), (42, 42.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[polling]\ninterval = "fifteen"\n', "polling.interval: must be a duration"),
        ('[polling]\ninterval = "10s"\noffset = "10s"\n', "polling.offset: must be shorter than"),
        ("[metrics]\nport = 70000\n", "metrics.port: Input should be less than or equal to 65535"),
        ("[polling]\nintervall = 5\n", "polling.intervall: unknown key"),
        ('[read_plans.x]\nquantities = ["energy"]\n', "read_plans: needs a [read_plans.default] entry"),
        ('[read_plans.default]\nquantities = ["Energy"]\n', "read_plans.default.quantities: quantity names"),
        ('[timeouts]\nminimum = "2s"\nmaximum = "1s"\n', "timeouts.maximum: must be at least"),
        ('[cluster]\nrenew = "5s"\nlease = "8s"\n', "cluster: [cluster] lease must be at least twice renew"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[polling\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


def test_run_command_exits_2_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "headend.toml"
    path.write_text("[clock]\nmax_drift = -5\n")
    out = headend("run", "--config", str(path))
    assert out.returncode == 2
    assert f"{path}: clock.max_drift: must be between 0.1 s and 366 d, got -5 s" in out.stderr
