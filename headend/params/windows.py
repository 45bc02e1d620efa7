"""When a campaign may write: its windows (local ``HH:MM-HH:MM`` ranges, any time when it has none),
never in the midnight freeze (23:55–00:10, the meters' daily freeze and the reads that follow it) nor
in the peak reading windows of the configuration. A range whose end is before its start runs over
midnight (its freeze part stays closed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
STEP = timedelta(minutes=1)
HORIZON = timedelta(days=2)


class WindowError(ValueError):
    """A window that is not ``HH:MM-HH:MM`` (one line)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A daily local time range, ``start`` included, ``end`` not."""

    start: time
    end: time

    def holds(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


FREEZE = Window(time(23, 55), time(0, 10))


def parse_window(text: str) -> Window:
    """``HH:MM-HH:MM`` as a :class:`Window` (start and end differ)."""
    found = _WINDOW.match(text.strip())
    if found is None:
        raise WindowError(f"window {text!r}: expected HH:MM-HH:MM, e.g. 09:00-17:00")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if (h1, m1) == (h2, m2):
        raise WindowError(f"window {text!r}: its start and end are the same")
    return Window(time(h1, m1), time(h2, m2))


def is_open(local: datetime, windows: list[Window], closed: list[Window]) -> bool:
    """Whether a write may run at ``local`` (the station's local time)."""
    moment = local.time()
    if FREEZE.holds(moment) or any(c.holds(moment) for c in closed):
        return False
    return not windows or any(w.holds(moment) for w in windows)


def next_open(local: datetime, windows: list[Window], closed: list[Window]) -> datetime | None:
    """The first whole minute from ``local`` on at which writes may run (``local`` itself when open);
    None when none comes within two days (windows wholly inside the closed times)."""
    if is_open(local, windows, closed):
        return local
    moment = local.replace(second=0, microsecond=0) + STEP
    while moment - local <= HORIZON:
        if is_open(moment, windows, closed):
            return moment
        moment += STEP
    return None
