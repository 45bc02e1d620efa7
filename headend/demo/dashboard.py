"""The demo's live dashboard (rich) and its one-line form for logs and non-terminals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from headend.demo.snapshot import Snapshot
from headend.demo.story import StoryState

_STATE_STYLE = {
    "confirmed": "green",
    "failed": "red",
    "expired": "red",
    "pending": "yellow",
    "sent": "yellow",
    "cancelled": "dim",
}
_QUALITY_STYLE = {"actual": "green", "backfilled": "cyan", "freeze": "cyan", "missing": "red"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _channels(snap: Snapshot) -> Table:
    table = Table(title="Channels", expand=True, title_justify="left")
    for column in (
        "channel",
        "meters",
        "cycles",
        "success",
        "utilisation",
        "readings",
        "timeouts",
        "bad frames",
        "noise B",
    ):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for ch in snap.channels:
        rate = ch.success_rate
        style = "green" if rate is not None and rate >= 0.95 else "yellow"
        table.add_row(
            ch.name,
            str(ch.meters),
            str(ch.cycles),
            Text(_pct(rate), style=style),
            _pct(ch.utilisation),
            str(ch.readings),
            str(ch.timeouts),
            str(ch.bad_frames),
            str(ch.noise_bytes),
        )
    return table


def _latest(snap: Snapshot) -> Table:
    table = Table(title="Latest readings", expand=True, title_justify="left")
    for column in ("meter", "quantity", "interval", "value", "quality"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in snap.latest:
        value = "-" if row["value"] is None else f"{row['value']:.2f}"
        table.add_row(
            row["meter"],
            row["quantity"],
            f"{row['ts'].astimezone(UTC):%H:%M:%S}Z",
            value,
            Text(row["quality"], style=_QUALITY_STYLE.get(row["quality"], "")),
        )
    return table


def _storage(snap: Snapshot) -> Text:
    quality = snap.readings_by_quality
    return Text.assemble(
        ("Stored ", "bold"),
        f"{snap.readings_stored} readings  ",
        ("actual ", "green"),
        f"{quality.get('actual', 0)}  ",
        ("backfilled from meter memory ", "cyan"),
        f"{quality.get('backfilled', 0) + quality.get('freeze', 0)}  ",
        ("missing (no memory) ", "red"),
        f"{quality.get('missing', 0)}  ",
        ("clock corrections ", "bold"),
        f"{snap.clock_corrections}  ",
        ("quarantined ", "bold"),
        f"{snap.quarantined}",
    )


def _backfills(snap: Snapshot) -> Table:
    table = Table(title="Gaps backfilled from meter memory (latest)", expand=True, title_justify="left")
    for column in ("meter", "intervals", "from", "to"):
        table.add_column(column)
    for row in snap.backfills:
        table.add_row(
            row["meter"],
            str(row["intervals"]),
            f"{row['first_ts'].astimezone(UTC):%H:%M:%S}Z",
            f"{row['last_ts'].astimezone(UTC):%H:%M:%S}Z",
        )
    return table


def _relay_read_back(evidence: str | dict | None) -> bool | None:
    """Whether the read-back found the relay open, from a command's stored evidence (None: no read-back)."""
    data = json.loads(evidence) if isinstance(evidence, str) else evidence or {}
    state = data.get("state")
    return state.get("open") if isinstance(state, dict) else None


def _commands(snap: Snapshot) -> Table:
    table = Table(title="Relay commands", expand=True, title_justify="left")
    for column in ("id", "meter", "action", "cause", "operator", "state", "read-back"):
        table.add_column(column)
    for row in snap.commands:
        relay = _relay_read_back(row["evidence"])
        readback = "-" if relay is None else ("relay open" if relay else "relay closed")
        table.add_row(
            str(row["id"]),
            row["meter"],
            row["action"],
            row["cause"],
            row["operator"],
            Text(row["state"], style=_STATE_STYLE.get(row["state"], "")),
            readback,
        )
    return table


def _story(story: StoryState) -> Panel:
    lines = [f"{at:%H:%M:%S}  {text}" for at, text in story.timeline[-6:]]
    lines = lines or ["waiting for the first readings"]
    title = f"Fee-control story: account balance {story.balance:.2f} CNY"
    return Panel("\n".join(lines), title=title, title_align="left")


def render(header: str, snap: Snapshot, story: StoryState, warnings: list[str]) -> RenderableType:
    """The whole dashboard for one refresh."""
    parts: list[RenderableType] = [
        Text(header, style="bold"),
        _channels(snap),
        _storage(snap),
        _latest(snap),
        _backfills(snap),
        _commands(snap),
        _story(story),
    ]
    if warnings:
        parts.append(Panel("\n".join(warnings[-4:]), title="Warnings", title_align="left", style="yellow"))
    return Group(*parts)


def status_line(elapsed_s: float, snap: Snapshot, story: StoryState) -> str:
    """A one-line progress report for non-terminal output."""
    quality = snap.readings_by_quality
    done = [
        f"{action} {state}"
        for action, state in (("disconnect", story.disconnect), ("reconnect", story.reconnect))
        if state
    ]
    return (
        f"[{datetime.now(UTC):%H:%M:%S}] t+{elapsed_s:.0f}s readings {snap.readings_stored}"
        f" (actual {quality.get('actual', 0)}, backfilled {quality.get('backfilled', 0)},"
        f" missing {quality.get('missing', 0)}) success {_pct(snap.success_rate)}"
        f" balance {story.balance:.2f}" + (f" | {', '.join(done)}" if done else "")
    )
