"""The engine's garbage-collector discipline: freeze survivors each cycle, collect in full hourly."""

from __future__ import annotations

import gc
import weakref

from headend.engine.heap import HeapKeeper


class Node:
    """A reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def cyclic_garbage() -> weakref.ref[Node]:
    node = Node()
    return weakref.ref(node)


def test_survivors_are_frozen_and_a_full_collection_frees_what_died_since() -> None:
    keeper = HeapKeeper(full_every=3600)
    try:
        early = cyclic_garbage()
        keeper.settle(now=0.0)  # first call: full collection, then freeze
        assert early() is None and gc.get_freeze_count() > 0

        node = Node()
        later = weakref.ref(node)
        keeper.settle(now=60.0)  # within the hour: freeze only (node is alive, so it is frozen)
        del node
        gc.collect()
        assert later() is not None  # frozen objects are not collected ...

        keeper.settle(now=3600.0)  # ... until the hourly full collection
        assert later() is None
    finally:
        gc.unfreeze()
