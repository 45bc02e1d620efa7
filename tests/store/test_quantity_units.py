"""A quantity gets the unit its canonical name's suffix says when the daemon first stores it."""

from __future__ import annotations

import asyncpg

from tests.support.logins import daemon_dsn


async def test_units_follow_the_name_suffix_and_an_explicit_unit_is_kept(pg_dsn: str) -> None:
    conn = await asyncpg.connect(daemon_dsn(pg_dsn))  # the writer's login stores new quantities
    try:
        names = [
            "energy_import_kwh",
            "voltage_a_v",
            "current_n_a",
            "power_total_kw",
            "frequency_hz",
            "reactive_import_kvarh",
            "relay",
            "power_factor",
        ]
        await conn.execute(
            "INSERT INTO quantities (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING", names
        )
        await conn.execute("INSERT INTO quantities (name, unit) VALUES ('tank_level_a', 'm')")
        units = dict(
            await conn.fetch(
                "SELECT name, unit FROM quantities WHERE name = ANY($1)", [*names, "tank_level_a"]
            )
        )
    finally:
        await conn.close()
    assert units == {
        "energy_import_kwh": "kWh",
        "voltage_a_v": "V",
        "current_n_a": "A",
        "power_total_kw": "kW",
        "frequency_hz": "Hz",
        "reactive_import_kvarh": "kvarh",
        "relay": None,
        "power_factor": None,
        "tank_level_a": "m",
    }
