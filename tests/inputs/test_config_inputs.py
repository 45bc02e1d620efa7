"""Bad daemon configuration: ``headend run --config FILE`` refuses each with one line and exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.inputs.harness import assert_refused, headend

# (case id, TOML body, message the one error line must contain)
CASES: list[tuple[str, str, str]] = [
    (
        "interval-1ms",
        '[polling]\ninterval = "1ms"\n',
        "polling.interval: must be between 1 s and 1 d, got 0.001 s",
    ),
    (
        "interval-huge",
        '[polling]\ninterval = "99999999999999d"\n',
        "polling.interval: must be between 1 s and 1 d",
    ),
    ("interval-zero", "[polling]\ninterval = 0\n", "polling.interval: must be between 1 s and 1 d, got 0 s"),
    ("interval-negative", "[polling]\ninterval = -5\n", "polling.interval: must be between 1 s and 1 d"),
    ("interval-word", '[polling]\ninterval = "fifteen"\n', "polling.interval: must be a duration"),
    ("interval-bool", "[polling]\ninterval = true\n", "polling.interval: must be a duration"),
    ("interval-nan", "[polling]\ninterval = nan\n", "polling.interval: must be a finite duration"),
    ("interval-inf", "[polling]\ninterval = inf\n", "polling.interval: must be a finite duration"),
    ("interval-digits", '[polling]\ninterval = "' + "9" * 400 + 's"\n', "polling.interval: must be a finite"),
    ("offset-negative", '[polling]\noffset = "-1s"\n', "polling.offset: must be a duration"),
    (
        "offset-too-long",
        '[polling]\ninterval = "10s"\noffset = "10s"\n',
        "polling.offset: must be shorter than",
    ),
    (
        "reload-1ms",
        '[polling]\ninventory_reload = "1ms"\n',
        "polling.inventory_reload: must be between 0.1 s",
    ),
    (
        "lookback-999d",
        '[backfill]\nlookback = "999d"\n',
        "backfill.lookback: must be between 0.1 s and 366 d",
    ),
    ("max-drift-negative", "[clock]\nmax_drift = -5\n", "clock.max_drift: must be between 0.1 s and 366 d"),
    (
        "timeouts-inverted",
        '[timeouts]\nminimum = "2s"\nmaximum = "1s"\n',
        "timeouts.maximum: must be at least",
    ),
    ("log-level-loud", '[logging]\nlevel = "LOUD"\n', "logging.level: unknown log level 'LOUD'"),
    ("log-format-xml", '[logging]\nformat = "xml"\n', "logging.format: String should match pattern"),
    (
        "metrics-host",
        '[metrics]\nhost = "no-such-host.invalid"\n',
        "cannot resolve host 'no-such-host.invalid'",
    ),
    (
        "metrics-port",
        "[metrics]\nport = 70000\n",
        "metrics.port: Input should be less than or equal to 65535",
    ),
    (
        "event-kind",
        '[events]\nkinds = ["power_down", "meteor_strike"]\n',
        "unknown event kind 'meteor_strike'",
    ),
    (
        "service-os-system",
        '[engine]\nservices = ["os:system"]\n',
        "engine.services: unknown service 'os:system'",
    ),
    ("service-near-miss", '[engine]\nservices = ["headend.billing.service:nope"]\n', "unknown service"),
    ("unknown-key", "[polling]\nintervall = 5\n", "polling.intervall: unknown key"),
    ("unknown-section", "[turbo]\nenabled = true\n", "turbo: unknown key"),
    ("no-default-plan", '[read_plans.x]\nquantities = ["energy"]\n', "needs a [read_plans.default] entry"),
    (
        "plan-name-case",
        '[read_plans.default]\nquantities = ["Energy"]\n',
        "quantity names are lower_snake_case",
    ),
    ("timezone", '[safety]\ntimezone = "Mars/Olympus"\n', "safety.timezone: unknown time zone"),
    (
        "spool-huge",
        "[database]\nspool_max_mb = 1000000000000\n",
        "database.spool_max_mb: Input should be less",
    ),
    (
        "quarantine-zero",
        "[health]\nquarantine_after = 0\n",
        "health.quarantine_after: Input should be greater",
    ),
    ("due-days-negative", "[billing]\ndue_days = -1\n", "billing.due_days: Input should be greater than"),
    (
        "plan-unknown-quantity",
        '[read_plans.default]\nquantities = ["energy_import_kwh", "energy_bogus_kwh"]\n',
        "read_plans: default: unknown quantity 'energy_bogus_kwh'",
    ),
    ("spool-dir-proc", '[database]\nspool_dir = "/proc/headend-spool"\n', "database.spool_dir: cannot use"),
    (
        "spool-dir-file",
        '[database]\nspool_dir = "/proc/version"\n',
        "spool_dir: /proc/version is not a directory",
    ),
    (
        "listeners-one-port",
        '[[listen.listeners]]\naddress = "127.0.0.1:9911"\n[[listen.listeners]]\naddress = "0.0.0.0:9911"\n',
        "127.0.0.1:9911 and 0.0.0.0:9911 both listen on port 9911",
    ),
    (
        "listener-foreign-address",  # an address this host does not have
        '[[listen.listeners]]\naddress = "192.0.2.1:9911"\n',
        "listen.listeners[0]: cannot listen on 192.0.2.1:9911: Cannot assign requested address",
    ),
    ("toml-broken", "[polling\n", "not valid TOML"),
    ("binary", "\x00\x01\x02", "not valid TOML"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "headend.toml"
    path.write_text(body, encoding="utf-8")
    outcome = headend("run", "--config", str(path))
    assert_refused(outcome, 2, f"{path}: ")
    assert message in outcome.err


@pytest.mark.parametrize("section", ["metrics", "listener"])
def test_a_port_in_use_is_refused(tmp_path: Path, section: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        body = (
            f"[metrics]\nport = {port}\n"
            if section == "metrics"
            else f'[metrics]\nport = 0\n[[listen.listeners]]\naddress = "127.0.0.1:{port}"\n'
        )
        path = tmp_path / "headend.toml"
        path.write_text(body)
        outcome = headend("run", "--config", str(path))
    what = "metrics" if section == "metrics" else "listen.listeners[0]"
    assert_refused(outcome, 2, f"{path}: {what}: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_refused(headend("run", "--config", str(missing)), 2, f"{missing}: cannot read")


def test_missing_config_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADEND_CONFIG", str(tmp_path / "nope.toml"))
    assert_refused(headend("run"), 2, f"HEADEND_CONFIG: {tmp_path / 'nope.toml'}: cannot read")


def test_the_project_services_are_still_allowed(tmp_path: Path) -> None:
    from headend.config import load_config

    path = tmp_path / "ok.toml"
    path.write_text(
        '[engine]\nservices = ["headend.billing.service:run", "headend.control.service:run"]\n'
        '[logging]\nlevel = "debug"\n[polling]\ninterval = "1d"\n'
    )
    config = load_config(path)
    assert config.logging.level == "DEBUG" and config.polling.interval == 86400.0
