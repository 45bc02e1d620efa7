"""Meter replacement: the old meter's final and the new meter's initial registers, so billing is exact."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.inventory import find_meter
from headend.store import accounts as assignments
from headend.store.audit import audit
from headend.store.billing import insert_replacement, retire_meter
from headend.store.vee import resolve_meter_holds


async def record_replacement(
    conn: asyncpg.Connection,
    old: str,
    new: str,
    *,
    at: datetime,
    final: dict[str, Decimal],
    initial: dict[str, Decimal],
    operator: str,
) -> int:
    """Record that meter ``new`` (name or address) replaced ``old`` at ``at``; returns the record id.

    The new meter takes over the old one's account; the old one leaves the account and the polling
    inventory (an open assignment of the old meter ends at ``at``, one of the new meter starts there).
    Billing splits any period containing ``at`` at these register values; the old meter's holds are
    resolved. Audited."""
    if at.tzinfo is None:
        raise ValueError("the replacement time needs a UTC offset")
    if not final or set(final) != set(initial):
        raise ValueError("give the same register quantities for the final and the initial readings")
    unknown = sorted(q for q in final if not q.startswith("energy_"))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not an energy register (e.g. energy_import_kwh)")
    old_id, old_label = await find_meter(conn, old)
    new_id, new_label = await find_meter(conn, new)
    if old_id == new_id:
        raise ValueError(f"meter {old_label} cannot replace itself: name the meter put in")
    final_text = {k: str(v) for k, v in final.items()}
    initial_text = {k: str(v) for k, v in initial.items()}
    async with conn.transaction():
        record_id = await insert_replacement(
            conn, old_id, new_id, at, json.dumps(final_text), json.dumps(initial_text), operator
        )
        await retire_meter(conn, old_id)
        current = await assignments.open_assignment(conn, old_id)
        if current is not None:  # assignments bill by time: the old meter's ends, the new one's starts
            await assignments.end_assignment(conn, current["id"], at)
            if await assignments.open_assignment(conn, new_id) is None:  # unless it has its own account
                await assignments.insert_assignment(conn, new_id, current["account_id"], at, None, operator)
        await resolve_meter_holds(conn, old_id, operator, f"replaced by {new_label}")
        await audit(
            conn,
            operator,
            "meter.replaced",
            "meter",
            old_label,
            f"replaced by {new_label}",
            {"at": at.isoformat(), "final": final_text, "initial": initial_text},
        )
    return record_id
