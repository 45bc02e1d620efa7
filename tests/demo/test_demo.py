"""``headend demo`` end to end: a real process with its simulators, embedded database and daemon."""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from headend.demo.fleet import DemoBus, demo_buses
from headend.operators import ROLES
from simulators.faults import RATE_KINDS, FaultPlan, FaultSpec
from tests.support import cli
from tests.support.cli import cli_env
from tests.support.web import sign_in

DEMO_TIMEOUT_S = 240
PLAN_EXCHANGES = 5  # quantities per scheduled read in the demo's read plan
SEED, METERS, INTERVAL_S = 7, 4, 15  # the demo's default seed


def _failures(log: Path) -> str:
    """The daemon log's failed and refused jobs, warnings and errors, for an assertion message."""
    lines = log.read_text().splitlines() if log.exists() else []
    marks = ("failed", "refused", '"warning"', '"error"')
    return "\n".join(line for line in lines if any(mark in line for mark in marks))


CONSOLE_LINE = re.compile(
    r"web console: (http://127\.0\.0\.1:\d+/) \(sign in as operator (\d+), password (\S+);"
)


def _check_console(line: str) -> None:
    """The printed URL serves the sign-in page, and the printed login signs in with every role."""
    found = CONSOLE_LINE.match(line)
    assert found, line
    url, operator, password = found.groups()
    page = httpx.get(url + "signin", timeout=10)
    assert page.status_code == 200 and 'name="signin"' in page.text
    client = httpx.Client(base_url=url.rstrip("/"), timeout=10)
    assert sign_in(client, operator, password).status_code == 303
    me = client.get("/api/me").json()
    assert me["operator_id"] == operator and set(me["roles"]) == set(ROLES)


def _run_until_story_done(tmp_path: Path, run_dir: Path, seed: int = SEED) -> tuple[int, str, dict]:
    """Start the demo without a duration, wait for the reconnection, then stop it with Ctrl-C (SIGINT)."""
    summary_file = tmp_path / "summary.json"
    args = [
        "demo",
        "--meters",
        str(METERS),
        "--interval",
        str(INTERVAL_S),
        "--seed",
        str(seed),
        "--json-summary",
        str(summary_file),
        "--no-dashboard",
        "--data-dir",
        str(run_dir),
    ]
    proc = cli.start(*args, env=cli_env(HEADEND_STATE_DIR=str(tmp_path / "state")), merged=True)
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        status_lines = 0
        for line in proc.stdout:
            output.append(line)
            status_lines += line.startswith("[")
            if line.startswith("web console: "):
                _check_console(line)
            # a status line every 10 s: 6 lines span three 15 s cycles, so two whole cycles of every
            # meter are stored even with the one that is offline for a cycle
            if "reconnect confirmed" in line and status_lines >= 6:
                proc.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(output)
        rest, _ = proc.communicate(timeout=60)
        output.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert summary_file.exists(), text
    assert sum(line.startswith("web console: ") for line in output) == 1, text  # and _check_console ran
    return proc.returncode, text, json.loads(summary_file.read_text())


def _demo_run(tmp_path: Path, seed: int = SEED) -> tuple[int, str, dict, str]:
    """One demo run in a directory the embedded server's user can reach (removed afterwards): exit
    code, output, summary and the failures its daemon logged."""
    base = Path(tempfile.mkdtemp(prefix="headend-demo-test-"))  # reachable by the server's user
    base.chmod(0o755)
    try:
        code, output, summary = _run_until_story_done(tmp_path, base / "run", seed)
        return code, output, summary, _failures(base / "run" / "headend.log")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _of_channel(failures: str, name: str) -> str:
    """The logged failures that name ``name``'s channel."""
    return "\n".join(line for line in failures.splitlines() if f'"{name}"' in line)[-4000:]


def _planned(bus: DemoBus, replies: int) -> dict[int, str]:
    """The rate faults the demo's simulator of ``bus`` planned for its first ``replies`` replies."""
    return FaultPlan(FaultSpec.parse(bus.spec.faults), bus.spec.seed + 1).faults_in(0, replies)


@pytest.mark.long(seconds=70)
def test_demo_reads_every_meter_backfills_and_plays_the_fee_control_story(tmp_path: Path) -> None:
    code, output, summary, failures = _demo_run(tmp_path)
    assert code == 0, output
    # every simulated meter answered and has readings
    assert summary["meters"] == 4 + 4 + 3 + 2 + 1 + 2  # a DTU and a concentrator dial in
    assert summary["meters_answering"] == summary["meters"] and summary["meters_without_readings"] == []
    assert summary["readings_by_quality"]["actual"] >= summary["meters"] * PLAN_EXCHANGES * 2
    buses = {bus.channel: bus for bus in demo_buses(METERS, INTERVAL_S, SEED, "unused")}
    for channel in summary["channels"]:
        assert channel["cycles"] >= 2, channel
        bus = buses.get(channel["name"])
        if bus is not None:
            # the simulator injected exactly the faults its seed planned for the replies it sent...
            planned = _planned(bus, channel["replies"])
            rate_faults = {k: n for k, n in channel["faults_injected"].items() if k in RATE_KINDS}
            assert rate_faults == Counter(planned.values()), (channel, planned)
            # ...and with this seed no two of them are in a row: the channel's retry absorbs each one
            assert not any(planned.get(i) == planned.get(i + 1) == "no_reply" for i in planned), planned
        seen = (channel, _of_channel(failures, channel["name"]))
        if "offline=" in channel["faults"]:
            # the meter that drops off the bus for one interval misses the cycles whose read of it
            # falls in the window (one, or two when the first read is queued a moment later than the
            # next: the window is exactly one interval long) and one more while quarantined after its
            # failed jobs; every other read succeeds
            assert channel["faults_injected"]["offline"] == 1
            assert channel["due"] - channel["succeeded"] <= 3, seen
        else:
            # every planned fault is absorbed by the retry, and the demo's reply timeouts (at least
            # 3 s) leave a loaded machine no room for an unplanned one: every read succeeds
            assert channel["succeeded"] == channel["due"], seen
    # gaps since installation were filled from the DL/T 645-2007 meters' load profiles
    assert summary["backfilled"] > 0
    assert summary["clock_corrections"] >= 1
    _assert_story(summary, output)


def _assert_story(summary: dict, output: str) -> None:
    """Arrears -> disconnect confirmed by read-back; payment -> reconnect confirmed; nothing else switched."""
    story = summary["story"]
    assert (story["disconnect"], story["reconnect"]) == ("confirmed", "confirmed"), story["timeline"]
    assert story["payment_reference"] and float(story["balance"]) > 0
    assert [(c["action"], c["cause"], c["state"], c["attempts"]) for c in summary["commands"]] == [
        ("disconnect", "arrears", "confirmed", 1),
        ("reconnect", "payment", "confirmed", 1),
    ]
    assert "fee control: disconnect confirmed, reconnect confirmed" in output


@pytest.mark.soak
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_demo_success_rates_over_other_seeds_stay_near_the_fault_rates(tmp_path: Path, seed: int) -> None:
    """Soak (``-m soak``): seeds whose plans may hold faults in a row, judged statistically: over some
    20 reads a channel's failures scatter binomially around its fault rate, and a failed read can cost
    its meter the next cycle in quarantine (three times the rate), plus one read that may time out on a
    loaded machine."""
    code, output, summary, failures = _demo_run(tmp_path, seed)
    assert code == 0, output
    assert summary["meters_answering"] == summary["meters"]
    for channel in summary["channels"]:
        failure = sum(channel["fault_rates"].values()) * PLAN_EXCHANGES  # per read, before any retry
        offline_share = 2 / channel["due"] if "offline=" in channel["faults"] else 0.0
        slack = 3 * failure + offline_share + 1 / channel["due"]
        assert channel["success_rate"] >= 1 - slack, (channel, failures)
    _assert_story(summary, output)


def test_demo_refuses_bad_options_before_starting_anything(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    for extra, message in (
        (["--interval", "7"], "must divide a day"),
        (["--data-dir", str(used)], "is not empty"),
    ):
        result = cli.headend("demo", "--no-dashboard", *extra)
        assert result.returncode == 2, result
        assert message in result.stderr + result.stdout
    assert (used / "something").read_text() == "x"


@pytest.mark.long(seconds=20)
def test_dashboard_shows_channels_storage_commands_and_story(tmp_path: Path) -> None:
    args = ("demo", "--dashboard", "--duration", "5", "--meters", "2", "--interval", "5")
    env = cli_env(COLUMNS="160", HEADEND_STATE_DIR=str(tmp_path / "state"))
    result = cli.headend(*args, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    screen = result.stdout
    for title in (
        "Channels",
        "Latest readings",
        "Gaps backfilled from meter memory",
        "Relay commands",
        "Fee-control story: account balance",
    ):
        assert title in screen, screen
    channels = ("dtu-2007", "rs485-1997", "rs485-modbus", "gprs-dtu", "gw-modbus-tcp", "concentrator")
    for channel in channels:
        assert f"│ {channel} " in screen, screen
    # the latest readings name their meters (which six come last depends on the buses' timing)
    meter_row = re.compile(rf"│ (?:{'|'.join(channels)})/\d+ +│ \w+ +│ \d\d:\d\d:\d\dZ")
    assert meter_row.search(screen), screen
    # without --data-dir the temporary database directory is gone after a clean stop
    workdir = screen.split("starting the embedded database in ", 1)[1].split()[0]
    assert "headend-demo-" in workdir and not Path(workdir).exists()
