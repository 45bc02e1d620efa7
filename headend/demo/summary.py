"""The demo's closing figures, as printed and as written by ``--json-summary``."""

from __future__ import annotations

import json
from typing import Any

from headend.demo.fleet import STORY_ACCOUNT, DemoFleet, fault_rates
from headend.demo.snapshot import Snapshot
from headend.demo.story import StoryState


def summarise(
    snap: Snapshot, story: StoryState, fleet: DemoFleet, interval_s: int, duration_s: float
) -> dict[str, Any]:
    """Meters, readings, success rate, backfill and command outcomes of a finished demo run."""
    quality = snap.readings_by_quality
    faults = {bus.channel: bus.spec.faults for bus in fleet.buses}
    injectors = {name: sim.faults for name, sim in fleet.running.items()}  # the concentrator has none
    return {
        "duration_s": round(duration_s, 1),
        "interval_s": interval_s,
        "meters": sum(ch.meters for ch in snap.channels),
        "meters_answering": snap.meters_with_actual,
        "meters_without_readings": snap.meters_without_actual,
        "readings_stored": snap.readings_stored,
        "readings_by_quality": quality,
        "backfilled": quality.get("backfilled", 0) + quality.get("freeze", 0),
        "missing": quality.get("missing", 0),
        "success_rate": snap.success_rate,
        "cycles": max((ch.cycles for ch in snap.channels), default=0),
        "clock_corrections": snap.clock_corrections,
        "channels": [
            {
                "name": ch.name,
                "meters": ch.meters,
                "cycles": ch.cycles,
                "due": ch.due,
                "succeeded": ch.succeeded,
                "success_rate": ch.success_rate,
                "utilisation": ch.utilisation,
                "readings": ch.readings,
                "faults": faults.get(ch.name, ""),
                "fault_rates": fault_rates(faults.get(ch.name, "")),
                # replies the simulator sent (or dropped) and the planned faults it injected into them
                "replies": injectors[ch.name].replies if ch.name in injectors else None,
                "faults_injected": dict(injectors[ch.name].counts) if ch.name in injectors else {},
            }
            for ch in snap.channels
        ],
        "commands": [
            {
                "id": row["id"],
                "meter": row["meter"],
                "action": row["action"],
                "cause": row["cause"],
                "operator": row["operator"],
                "state": row["state"],
                "attempts": row["attempts"],
            }
            for row in snap.commands
        ],
        "story": {
            "account": STORY_ACCOUNT,
            "balance": str(story.balance),
            "disconnect": story.disconnect,
            "reconnect": story.reconnect,
            "payment_reference": story.payment_reference,
            "timeline": [f"{at.isoformat()} {text}" for at, text in story.timeline],
        },
    }


def summary_text(summary: dict[str, Any]) -> str:
    """A few lines for the terminal at the end of the demo."""
    rate = summary["success_rate"]
    story = summary["story"]
    lines = [
        f"meters {summary['meters']} ({summary['meters_answering']} answered), "
        f"{summary['cycles']} cycles in {summary['duration_s']:.0f} s",
        f"readings stored {summary['readings_stored']}: {json.dumps(summary['readings_by_quality'])}",
        f"read success rate {'-' if rate is None else f'{rate:.1%}'}, "
        f"clock corrections {summary['clock_corrections']}",
        f"fee control: disconnect {story['disconnect'] or 'not reached'}, "
        f"reconnect {story['reconnect'] or 'not reached'}; balance {story['balance']} CNY",
    ]
    return "\n".join(lines)
