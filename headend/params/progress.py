"""A campaign's progress as text: how many meters are in each state and a progress bar of those
settled (verified, skipped as already correct, failed with a reason)."""

from __future__ import annotations

STATES = ("pending", "written", "verified", "skipped", "failed")
SETTLED = ("verified", "skipped", "failed")
BAR = 30


def settled_share(counts: dict[str, int]) -> tuple[int, float]:
    """How many meters are settled, and their share of all (1.0 for a campaign without meters)."""
    total = sum(counts.values())
    settled = sum(counts.get(s, 0) for s in SETTLED)
    return settled, settled / total if total else 1.0


def progress_lines(name: str, state: str, counts: dict[str, int]) -> list[str]:
    """The campaign's line, its progress bar and its counts per state."""
    total = sum(counts.values())
    settled, share = settled_share(counts)
    filled = round(share * BAR)
    return [
        f"campaign {name}: {state}",
        f"[{'#' * filled}{'.' * (BAR - filled)}] {settled}/{total} meters settled ({share:.0%})",
        "  ".join(f"{s} {counts.get(s, 0)}" for s in STATES),
    ]
