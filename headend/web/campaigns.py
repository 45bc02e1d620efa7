"""The parameter-campaign pages' data (read-only, any signed-in role): every campaign with its meters
counted by state and the share settled, and one campaign's meters, failed ones first, a page at a
time."""

from __future__ import annotations

import asyncpg

from headend.params.progress import STATES, settled_share
from headend.store import console_campaigns
from headend.web.data import NotFound

Row = dict[str, object]
PAGE = 100


def _progress(found: Row) -> Row:
    """The campaign with its ``counts`` by state, ``settled`` (verified, skipped, failed) and the
    settled ``share`` (1.0 for a campaign without meters), as ``headend params campaign show``."""
    counts = {s: int(str(found.pop(s))) for s in STATES}
    settled, share = settled_share(counts)
    return {**found, "counts": counts, "settled": settled, "share": share}


async def campaigns(conn: asyncpg.Connection) -> Row:
    """Every campaign, newest first, with its progress."""
    return {"campaigns": [_progress(c) for c in await console_campaigns.campaigns(conn)]}


async def campaign(conn: asyncpg.Connection, name: str, page: int = 1) -> Row:
    """One campaign's progress and the ``page``-th ``PAGE`` of its meters, failed first."""
    found = await console_campaigns.campaign(conn, name)
    if found is None:
        raise NotFound(f"no campaign {name!r}")
    shown = await console_campaigns.meters(conn, int(str(found["id"])), PAGE, (page - 1) * PAGE)
    total = int(str(found["total"]))
    pages = max(1, -(-total // PAGE))
    return {"campaign": _progress(found), "meters": shown, "page": page, "pages": pages}
