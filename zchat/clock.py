"""One clock for timestamps and timers that a step of the system clock cannot move.

Timestamps must read as wall time, and heartbeat deadlines must not jump when
the system clock is set back or forward. ``steady_wall_clock()`` gives both: wall
time read once at start, advanced by the monotonic clock from then on.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def steady_wall_clock() -> Callable[[], float]:
    """A clock that starts at the wall time and only ever moves with monotonic time."""
    offset = time.time() - time.monotonic()
    return lambda: time.monotonic() + offset
