"""Garbage-collector discipline for a long-running daemon with a large, stable working set.

The inventory, drivers, channel state and health records live as long as the daemon, yet CPython's
cyclic collector would traverse them again and again while thousands of short-lived exchanges churn
the young generation. At each read cycle the engine moves every object alive to the permanent
generation (``gc.freeze``, constant time), so the automatic collections in between look only at
what the cycle itself creates. A frozen object that later becomes cyclic garbage would never be
collected, so once per ``full_every`` seconds everything is unfrozen and collected first.
"""

from __future__ import annotations

import gc
import math


class HeapKeeper:
    """Freezes the survivors at each cycle; a full collection at most once per ``full_every`` s."""

    def __init__(self, full_every: float = 3600.0) -> None:
        self.full_every = full_every
        self._last_full = -math.inf

    def settle(self, now: float) -> None:
        """Call at a cycle boundary; ``now`` is a monotonic clock in seconds."""
        if now - self._last_full >= self.full_every:
            gc.unfreeze()
            gc.collect()
            self._last_full = now
        gc.freeze()
