"""referral_kit.heap: what exists when a service starts serving is out of the collector's
full passes; what is created later is collected as usual."""

from __future__ import annotations

import gc
import weakref

from referral_kit.heap import freeze_startup_heap


class _Thing:
    pass


def test_startup_objects_are_frozen_and_later_garbage_still_collected() -> None:
    try:
        early = _Thing()
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        assert all(obj is not early for obj in gc.get_objects())  # not tracked any more

        later = _Thing()
        later.cycle = later  # only a collection frees a cycle
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
