"""The primary's clock, as seen from the runner.

RethinkDB's changes carry no timestamp. The runner stamps each change when it reads it from
the feed, in the primary's clock: ``now_ms()`` = the local monotonic clock plus an offset
measured by asking the primary for ``r.now()`` (``Cluster.server_time``). Each measurement's
uncertainty is half its round trip; the sample with the smallest round trip of the last
``WINDOW`` measurements is used, so a slow answer never moves the clock. The stamp of a
change is later than its commit by the feed's delivery delay (milliseconds when the runner
keeps up) and off by at most the offset's uncertainty; ``error_ms`` is that uncertainty.

If the primary's clock jumps, the offset follows within ``WINDOW`` measurements (seconds: the
sample from before the jump leaves the window); stamps handed out never go back (``now_ms``
and ``OpenSlice`` hold them), so a backwards jump shows as changes bunched at the time of the
jump, a forwards jump as an empty stretch of the log.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

WINDOW = 10


class PrimaryClock:
    def __init__(self, server_time: Callable[[], Awaitable[float]], *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._server_time = server_time
        self._monotonic = monotonic
        self._samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (rtt, offset)
        self._last = 0

    @property
    def synced(self) -> bool:
        return bool(self._samples)

    async def measure(self) -> None:
        """Ask the primary for its time once (raises ClusterUnreachable/ClusterError)."""
        before = self._monotonic()
        server = await self._server_time()
        after = self._monotonic()
        self._samples.append((after - before, server - (before + after) / 2))

    def _best(self) -> tuple[float, float]:
        if not self._samples:
            raise RuntimeError("PrimaryClock used before its first measurement")
        return min(self._samples)

    @property
    def error_ms(self) -> int:
        return int(self._best()[0] * 500) + 1

    def now_ms(self) -> int:
        """The primary's time now, in milliseconds since the epoch; never decreasing."""
        stamp = int((self._monotonic() + self._best()[1]) * 1000)
        self._last = max(self._last, stamp)
        return self._last
