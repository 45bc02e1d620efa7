"""The tariffs pages' data (read-only): every tariff, and one tariff's versions: its register prices
by the time they take effect, and its time-of-use periods or tiered blocks by revision."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from headend.store import console_billing
from headend.web.data import NotFound

Row = dict[str, object]


def _json(text: object) -> object:
    return json.loads(text) if isinstance(text, str) else text


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def _version(effective_from: datetime | None, definition: object) -> Row:
    """A revision's definition as shown: its time-of-use periods, tiered blocks and time zone."""
    found = definition if isinstance(definition, dict) else {}
    slots = found.get("slots") or []
    blocks = found.get("blocks") or []
    return {
        "from": effective_from,
        "timezone": found.get("timezone"),
        "periods": [str(s) for s in slots] if isinstance(slots, list) else [],
        "blocks": [{"upto": b.get("upto"), "price": b.get("price")} for b in blocks if isinstance(b, dict)]
        if isinstance(blocks, list)
        else [],
    }


async def tariffs(conn: asyncpg.Connection) -> Row:
    """Every tariff with how many accounts use it and how many versions it has."""
    return {"tariffs": await console_billing.tariffs(conn)}


async def tariff(conn: asyncpg.Connection, name: str) -> Row:
    """One tariff: its register prices grouped by the time they took effect (newest first), and its
    definitions (the first one, then each revision) with their periods or blocks."""
    found = await console_billing.tariff(conn, name)
    if found is None:
        raise NotFound(f"unknown tariff {name!r}")
    prices = _json(found.pop("prices"))
    by_time: dict[str, Row] = {}
    for price in prices if isinstance(prices, list) else []:
        version = by_time.setdefault(str(price["from"]), {"from": _time(price["from"]), "rates": []})
        rates = version["rates"]
        assert isinstance(rates, list)
        rates.append({"register": price["register"], "price": price["price"]})
    revisions = _json(found.pop("revisions"))
    first = _json(found.pop("definition"))
    revised = revisions if isinstance(revisions, list) else []
    # the first definition is in force until the first revision
    definitions = [_version(None, first)] + [_version(_time(r["from"]), r["definition"]) for r in revised]
    return {
        "tariff": found,
        "rates": list(reversed(by_time.values())),  # newest first (the query gives them oldest first)
        "definitions": definitions,
    }
