"""The rules pass over stored readings and events, run as the daemon's least-privilege login: each rule
finds exactly the meter seeded for it, a second pass counts instead of duplicating, and once the
conditions have left the windows the exceptions are marked clear and then closed by themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.analytics.exceptions import counts, run_rules
from headend.config import ExceptionsConfig
from headend.store.exceptions import RuleOutcome
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading

NOW = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)
ZONE = ZoneInfo("Asia/Shanghai")
CFG = ExceptionsConfig(
    enabled=True,
    rules=[
        "register_backwards",
        "meter_stopped",
        "reverse_energy",
        "voltage_loss",
        "current_imbalance",
        "consumption_spike",
        "clock_offset",
        "tamper",
        "no_read",
    ],
    window=60,
    spike_window=60,
    spike_history=3600,
    auto_close_after=0,
    no_read_after=86400,
)


async def _seed(owner: asyncpg.Connection) -> dict[str, int]:
    channel = await owner.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    ids = {}
    for n, name in enumerate(("back", "stop", "rev", "ok", "spike", "phase", "tamp", "clk", "silent")):
        ids[name] = await owner.fetchval(
            "INSERT INTO meters (name, protocol, address, model, channel_id, installed_at)"
            " VALUES ($1, 'dlt645-2007', $2, 'dlt645-generic', $3, '2020-01-01') RETURNING id",
            name,
            f"{n + 1:012d}",
            channel,
        )
    s = timedelta(seconds=1)
    await ensure_partitions(owner, NOW - timedelta(days=1), NOW + timedelta(days=1))  # a no-op on TimescaleDB
    series = {
        ("back", "energy_import_kwh"): [(-40, 100.0), (-20, 90.0)],
        ("stop", "energy_import_kwh"): [(-50, 50.0), (-20, 50.0)],
        ("stop", "energy_export_kwh"): [(-50, 0.0), (-20, 0.0)],
        ("stop", "current_a_a"): [(-20, 5.0)],
        ("rev", "energy_import_kwh"): [(-50, 10.0), (-20, 10.0)],
        ("rev", "energy_export_kwh"): [(-40, 1.0), (-20, 2.0)],
        ("ok", "energy_import_kwh"): [(-40, 10.0), (-20, 10.5), (-10, 11.0)],
        ("ok", "current_a_a"): [(-20, 5.0)],
        ("spike", "energy_import_kwh"): [(-3000, 0.0), (-600, 1.0), (-40, 1.0), (-10, 3.0)],
        ("phase", "energy_import_kwh"): [(-40, 1.0), (-20, 1.5)],
        **{("phase", f"voltage_{p}_v"): [(-20, v)] for p, v in zip("abc", (230.0, 0.5, 229.0), strict=True)},
        **{("phase", f"current_{p}_a"): [(-20, a)] for p, a in zip("abc", (5.0, 0.0, 5.0), strict=True)},
        **{("ok", f"voltage_{p}_v"): [(-20, 230.0)] for p in "abc"},
        **{("ok", f"current_{p}_a"): [(-20, a)] for p, a in zip("abc", (5.0, 4.0, 4.5), strict=True)},
    }
    for name in ("tamp", "clk"):
        series[(name, "energy_import_kwh")] = [(-40, 1.0), (-20, 1.5)]
    for (name, quantity), points in series.items():
        for offset, value in points:
            await add_reading(owner, ids[name], NOW + offset * s, value, quantity)
    await owner.executemany(
        "INSERT INTO events (category, kind, meter_id, occurred_at, details)"
        " VALUES ($1, $2, $3, $4, $5::jsonb)",
        [
            ("meter", "meter_clear", ids["tamp"], NOW - timedelta(hours=1), "{}"),
            ("meter", "power_down", ids["ok"], NOW - timedelta(hours=1), "{}"),
            (
                "comm",
                "clock_off",
                ids["clk"],
                NOW - timedelta(hours=2),
                '{"drift_s": -600.0, "action": "write"}',
            ),
            ("comm", "clock_corrected", ids["ok"], NOW - timedelta(hours=2), '{"drift_s": 40.0}'),
        ],
    )
    return ids


async def _pass(conn: asyncpg.Connection, at: datetime) -> list[RuleOutcome]:
    """One rules pass; every rule must have run."""
    outcomes = await run_rules(conn, CFG, ZONE, at)
    assert all(isinstance(o, RuleOutcome) for o in outcomes.values()), outcomes
    return [o for o in outcomes.values() if isinstance(o, RuleOutcome)]


async def _states(conn: asyncpg.Connection) -> set[tuple[str, str, str, int]]:
    found = await conn.fetch(
        "SELECT x.rule, m.name, x.state, x.count FROM exceptions x JOIN meters m ON m.id = x.meter_id"
    )
    return {(r["rule"], r["name"], r["state"], r["count"]) for r in found}


async def test_each_rule_finds_its_meter_then_counts_then_closes(pg_dsn: str, logins: dict[str, str]) -> None:
    owner = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(logins["daemon"])
    try:
        await _seed(owner)
        found = {
            ("register_backwards", "back"),
            ("meter_stopped", "stop"),
            ("reverse_energy", "rev"),
            ("voltage_loss", "phase"),
            ("current_imbalance", "phase"),
            ("consumption_spike", "spike"),
            ("tamper", "tamp"),
            ("clock_offset", "clk"),
            ("no_read", "silent"),
        }
        first = await _pass(daemon, NOW)
        assert sum(o.opened for o in first) == len(found)
        assert await _states(daemon) == {(rule, name, "open", 1) for rule, name in found}
        phases = {
            r["rule"]: json.loads(r["evidence"])
            for r in await daemon.fetch(
                "SELECT rule, evidence::text FROM exceptions"
                " WHERE rule IN ('voltage_loss', 'current_imbalance')"
            )
        }
        at = (NOW - timedelta(seconds=20)).isoformat()
        assert phases == {
            "voltage_loss": {
                "volts": {"voltage_a_v": 230.0, "voltage_b_v": 0.5, "voltage_c_v": 229.0},
                "ts": at,
                "lost": ["voltage_b_v"],
            },
            "current_imbalance": {
                "amps": {"current_a_a": 5.0, "current_b_a": 0.0, "current_c_a": 5.0},
                "ts": at,
                "imbalance_pct": 100.0,
            },
        }
        second = await _pass(daemon, NOW)
        assert sum(o.seen for o in second) == len(found) and not any(o.opened for o in second)
        assert await _states(daemon) == {(rule, name, "open", 2) for rule, name in found}

        later = NOW + timedelta(hours=3)  # the readings left the windows; events, clock and silence did not
        await _pass(daemon, later)
        still = {("tamper", "tamp"), ("clock_offset", "clk"), ("no_read", "silent")}
        marked = await daemon.fetch("SELECT rule FROM exceptions WHERE clear_since IS NOT NULL")
        assert {r["rule"] for r in marked} == {rule for rule, _ in found - still}
        closing = await _pass(daemon, later)
        assert sum(o.closed for o in closing) == len(found - still)
        assert await _states(daemon) == {(r, n, "open", 4) for r, n in still} | {
            (r, n, "auto_closed", 2) for r, n in found - still
        }
        by_state = await counts(daemon)
        assert by_state[("meter_stopped", "auto_closed")] == 1 and by_state[("tamper", "open")] == 1
        assert by_state[("loss_jump", "open")] == 0

        actors = await owner.fetch(
            "SELECT DISTINCT actor, action FROM audit_log WHERE entity = 'exception' ORDER BY 2"
        )
        assert [(a["actor"], a["action"]) for a in actors] == [
            ("system", "exception.auto_closed"),
            ("system", "exception.open"),
        ]
    finally:
        await daemon.close()
        await owner.close()
