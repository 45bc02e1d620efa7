"""`headend sim concentrator` as a subprocess dialling a codec-built master on a real socket."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from protocols.gdw1376 import (
    Afn,
    Curve,
    CurveRequest,
    EnergyReading,
    GroupMember,
    PhaseSnapshot,
    TotalGroup,
    unit,
)
from tests.gdw1376.master import MasterStation
from tests.support import cli

pytestmark = pytest.mark.timeout(60)


async def test_cli_concentrator_dials_logs_in_and_answers() -> None:
    master = await MasterStation().start()
    process = await cli.spawn(
        "sim", "concentrator", "--connect", f"127.0.0.1:{master.port}", "--address", "03146332",
        "--meters", "4", "--heartbeat", "0.3", "--latency-ms", "10",
        "--history-days", "1", "--three-phase", "1", "--json",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        described = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert described["address"] == "0314-25394"
        assert [m["pn"] for m in described["meters"]] == [1, 2, 3, 4]
        connection = await master.next_connection(30)
        tests = await connection.wait_link_tests(2)  # login, then a heartbeat
        assert tests[0].address.hex_name == "03146332" and tests[1].units[0].fns == (3,)
        (answer,) = await connection.ask(Afn.CLASS1_DATA, [unit((1, 2, 3, 4), 129)])
        values = [v for _pn, _fn, v in answer.items()]
        assert len(values) == 4 and all(isinstance(v, EnergyReading) and v.collected for v in values)
        # curves of voltage and current per phase: p1 is three-phase, p2 single-phase (B, C: EE)
        local = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=8)
        start = local.replace(minute=local.minute // 15 * 15, second=0, microsecond=0) - timedelta(hours=2)
        fns = (89, 90, 91, 92, 93, 94, 95)
        asked = (CurveRequest(start, 1, 4),) * len(fns)
        answers = await connection.ask(Afn.CLASS2_DATA, [unit(1, fns, *asked), unit(2, fns, *asked)])
        curves = {(pn, fn): v for a in answers for pn, fn, v in a.items()}
        assert all(isinstance(v, Curve) and len(v.values) == 4 for v in curves.values())
        assert all(200 < v < 260 for fn in (89, 90, 91) for v in curves[(1, fn)].values)
        assert all(v is not None and v >= 0 for v in curves[(1, 95)].values)
        assert all(200 < v < 260 for v in curves[(2, 89)].values)
        assert curves[(2, 90)].values == (None,) * 4 and curves[(2, 95)].values == (None,) * 4
        (now,) = await connection.ask(Afn.CLASS1_DATA, [unit(1, 25)])
        snapshot = now.value(25, 1)
        assert isinstance(snapshot, PhaseSnapshot) and all(200 < v < 260 for v in snapshot.voltage_v)
    finally:
        assert (await cli.stop(process, 30)).returncode == 0
        await master.stop()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--faults", "ee=3", "error: bad value in fault item 'ee=3'"),
        ("--baud", "300", "error: meter baud 300 is not one of [600, 1200, 2400, 4800, 7200, 9600, 19200]"),
        (
            "--address",
            "0314",
            "error: concentrator address '0314': want REGION-TERMINAL (0314-25394) or 8 hex digits",
        ),
    ],
)
async def test_cli_rejects_bad_options_in_one_line(option: str, value: str, message: str) -> None:
    code, _out, err = await cli.headend_async(
        "sim", "concentrator", "--connect", "127.0.0.1:9", option, value
    )
    assert code == 2
    assert err.strip() == message


async def test_cli_concentrator_takes_its_total_groups_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(
        "[[total_groups]]\nnumber = 1\nmembers = [1, 2, { pn = 3, subtract = true }]\n"
        "[[total_groups]]\nnumber = 3\nmembers = [{ pn = 4, reverse = true }]\n"
    )
    master = await MasterStation().start()
    process = await cli.spawn(
        "sim", "concentrator", "--connect", f"127.0.0.1:{master.port}", "--meters", "4",
        "--latency-ms", "10", "--history-days", "1", "--config", str(config), "--json",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        described = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert described["total_groups"] == [
            {"number": 1, "members": [1, 2, 3]},
            {"number": 3, "members": [4]},
        ]
        connection = await master.next_connection(30)
        await connection.wait_link_tests(1)
        (answer,) = await connection.ask(Afn.QUERY_PARAMETERS, [unit(0, 14)])
        assert answer.value(14) == (
            TotalGroup(1, (GroupMember(1), GroupMember(2), GroupMember(3, subtract=True))),
            TotalGroup(3, (GroupMember(4, reverse=True),)),
        )
    finally:
        assert (await cli.stop(process, 30)).returncode == 0
        await master.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[total_groups]]\nnumber = 9\nmembers = [1]\n", "total_groups #1: number must be 1..8"),
        ("[[total_groups]]\nnumber = 1\nmembers = [65]\n", "total_groups #1: member pn must be 1..64"),
        ("[[groups]]\nnumber = 1\n", "unknown key 'groups' (expected [[total_groups]])"),
        ("number = [", "not TOML: "),
    ],
)
async def test_cli_refuses_a_bad_config_file_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(text)
    code, _out, err = await cli.headend_async(
        "sim", "concentrator", "--connect", "127.0.0.1:9", "--config", str(config)
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.strip().startswith(f"error: {config}: {message}")
