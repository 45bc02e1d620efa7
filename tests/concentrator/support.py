"""Shared pieces of the concentrator tests: a simulated fixed-address concentrator, inventory, config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from headend.config import HeadendConfig, validate_config
from simulators.concentrator import ConcentratorSpec, SimConcentrator

ADDRESS = "0314-25394"


@asynccontextmanager
async def listening(**spec: Any) -> AsyncIterator[SimConcentrator]:
    """A simulated concentrator waiting for the master on 127.0.0.1 (fast by default)."""
    options: dict[str, Any] = {"meters": 8, "ports": 2, "latency_ms": 20, "login_timeout_s": 1.0}
    options.update(spec)
    sim = SimConcentrator(ConcentratorSpec(port=0, listen=True, address=ADDRESS, **options))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def url_of(sim: SimConcentrator, **query: object) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"gdw1376+tcp://127.0.0.1:{sim.bound_port}?address={sim.address.key}{extra}"


def inventory_toml(
    path: Path,
    url: str,
    sim: SimConcentrator,
    *,
    with_pn: bool = True,
    installed_at: datetime | None = None,
    skip: tuple[int, ...] = (),
) -> Path:
    """A TOML inventory of the concentrator channel and its simulated meters (port and Pn as archived)."""
    lines = ["[[channels]]", 'name = "conc-1"', f'url = "{url}"', ""]
    for index, meter in enumerate(sim.pool.meters):
        if index in skip:
            continue
        lines += [
            "[[meters]]",
            'channel = "conc-1"',
            'protocol = "dlt645-2007"',
            f'address = "{meter.address}"',
            'model = "dlt645-generic"',
            f"port = {sim.pool.port_of[meter.address]}",
        ]
        if with_pn:
            lines.append(f"pn = {index + 1}")
        if installed_at is not None:
            lines.append(f'installed_at = "{installed_at.isoformat()}"')
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def engine_config(quantities: list[str], **sections: dict[str, Any]) -> HeadendConfig:
    document: dict[str, Any] = {
        "polling": {"interval": "1h", "inventory_reload": "1h"},
        "read_plans": {"default": {"quantities": quantities}},
        "backfill": {"enabled": False},
        "clock": {"enabled": False},
        "events": {"enabled": False},
        "metrics": {"port": 0},
        "timeouts": {"initial": "2s", "maximum": "5s"},
        "health": {"quarantine_after": 5},
    }
    document.update(sections)
    return validate_config(document, "test")
