"""The VEE holds page's data and its two writes: release a hold (resolve it as ``headend billing
resolve`` does) or keep it open with a note; both by a signed-in admin on the bound desk connection
(the database checks the role again)."""

from __future__ import annotations

import json
import math

import asyncpg

from headend.billing.vee import RESOLUTIONS, HoldError, keep_hold, resolve_hold
from headend.limits import MAX_REGISTER_KWH
from headend.store import console_billing
from headend.web.actions import Refused
from headend.web.identity import Forbidden, Principal

Row = dict[str, object]


async def holds(conn: asyncpg.Connection) -> Row:
    """The open holds (with their notes) and the holds resolved last."""
    listed = []
    for hold in await console_billing.open_holds(conn):
        notes = hold.pop("notes")
        listed.append({**hold, "notes": json.loads(notes) if isinstance(notes, str) else []})
    return {"open": listed, "resolved": await console_billing.resolved_holds(conn)}


def _register(text: str | float | None, name: str) -> float | None:
    """An optional register value in kWh (blank: none)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
    except ValueError:
        raise Refused(f"{name} must be a number of kWh, got {str(text)[:40]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= float(MAX_REGISTER_KWH):
        raise Refused(f"{name} must be from 0 to {MAX_REGISTER_KWH} kWh")
    return value


async def release(
    conn: asyncpg.Connection,
    who: Principal,
    hold_id: int,
    resolution: str,
    reason: str,
    values: dict[str, str | float | None],
) -> None:
    """Resolve a hold (admin role): ``accepted``, ``replaced`` (``final`` / ``initial``) or
    ``corrected`` (``value``), with a reason, under the signed-in operator."""
    who.require("admin")
    if resolution not in RESOLUTIONS:
        raise Refused(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution[:40]!r}")
    if not reason.strip():
        raise Refused("a reason is required")
    final, initial, corrected = (_register(values.get(k), k) for k in ("final", "initial", "value"))
    try:
        await resolve_hold(
            conn,
            hold_id,
            resolution,
            operator=who.operator_id,
            reason=reason.strip(),
            final=final,
            initial=initial,
            corrected=corrected,
        )
    except HoldError as exc:
        raise Refused(str(exc)) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None


async def keep(conn: asyncpg.Connection, who: Principal, hold_id: int, note: str) -> None:
    """Keep a hold open with a note (admin role), under the signed-in operator."""
    who.require("admin")
    try:
        await keep_hold(conn, hold_id, operator=who.operator_id, note=note)
    except HoldError as exc:
        raise Refused(str(exc)) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
