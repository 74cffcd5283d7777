"""Settings and counters of one table's replication (``drtool.standby.table``)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableSettings:
    queue_size: int = 1_000_000
    batch_size: int = 1000
    gather: float = 0.0  # seconds the source's feed may gather changes (Cluster.changes)
    shards: int | None = None  # override for tables created on the target
    replicas: int | None = None
    source_reads: float | None = None  # documents/s read by a copy (the primary's limit)
    record_state: bool = True  # False for drtool's own heartbeat table
    #: the write-hook standby fence (drtool.coordination.standby_fence.HookFence): the target's
    #: hook refuses every write instead of mirroring the source's; None: hooks mirrored
    hook_fence: Any = None



@dataclass
class Stats:
    applied: int = 0
    copied: int = 0
    repairs: int = 0
    last_repair: dict | None = None
    window: deque = field(default_factory=deque)  # (monotonic time, applied) samples

    def note_applied(self, n: int) -> None:
        self.applied += n
        now = time.monotonic()
        self.window.append((now, self.applied))
        while self.window and self.window[0][0] < now - 60:
            self.window.popleft()

    def recent_rate(self) -> float:
        if len(self.window) < 2:
            return 0.0
        (t0, a0), (t1, a1) = self.window[0], self.window[-1]
        return (a1 - a0) / max(t1 - t0, 1.0)
