"""Writing the change log: one ``TableArchiver`` per table, one ``Archive`` per runner.

A table's log is a sequence of *timelines*. A timeline starts when a changefeed on the table
is ready (its id carries that time in the primary's clock); then a *base* is written (an
incremental snapshot of that table alone: only what changed since its previous snapshot is
uploaded) and a base marker names it; meanwhile every change read from the feed is stamped
with the primary's clock (``PrimaryClock``) and collected in the open slice, which is sealed
every ``slice_every`` seconds (or sooner when it holds ``max_slice_bytes``) into the spool;
the uploader moves sealed slices from the spool into the repository, oldest first.

A *break* ends a timeline: a feed overflow, a lost connection or a server restart (the feed
errors), a full spool, a runner that stops or is killed. The open slice of a broken timeline
is dropped (its changes may be incomplete: a slice is all or nothing); sealed slices stay,
and the timeline ends at the last one. Then a new timeline starts: new feed first, then a new
base. A stopping runner seals the open slice first (nothing is missing from it), so only a
killed runner loses the seconds since the last seal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from drtool.changelog.clock import PrimaryClock
from drtool.changelog.slices import (
    OpenSlice, SliceHeader, base_name, encode_slice, new_timeline, slice_name,
)
from drtool.changelog.spool import Spool, SpoolFull
from drtool.cluster.base import Cluster
from drtool.cluster.scanning import feed_ready
from drtool.errors import ClusterUnreachable, DrtoolError, FeedOverflowed, StorageUnreachable
from drtool.model import FeedChange, FeedOverflow, TableName
from drtool.repo.repository import Repository
from drtool.changelog.report import Reporter
from drtool.util.tasks import Stopped, unless_stopped

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
SEAL_CHECK = 0.1  # seconds between checks whether the open slice is due

#: ``make_base(table, extra)``: snapshot one table with ``extra`` in its manifest; returns
#: the snapshot id.
MakeBase = Callable[[TableName, dict], Awaitable[str]]


@dataclass(frozen=True)
class ArchiveSettings:
    slice_every: float = 10.0
    max_slice_bytes: int = 8 << 20
    base_every: float = 3600.0  # a new base on the same timeline this often (0: never)
    queue_size: int = 1_000_000


class Break(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class TableLog:
    """What ``drtool status`` and the metrics show of one table's log."""

    timeline: str | None = None
    base: str | None = None  # snapshot id of the current timeline's base
    restorable_from: int | None = None  # the base was complete then (ms, primary's clock)
    sealed_until: int | None = None  # t1 of the newest sealed slice (ms)
    breaks: dict[str, int] = field(default_factory=dict)  # cause -> count
    last_break: str | None = None


def _cause(err: Exception) -> str:
    """The break cause recorded for an error that ended a timeline."""
    if isinstance(err, FeedOverflowed):
        return "feed-overflow"
    if isinstance(err, (ClusterUnreachable, StorageUnreachable)):
        return "connection-lost"
    return "error" if isinstance(err, DrtoolError) else "internal"


class TableArchiver:
    def __init__(self, cluster: Cluster, table: TableName, repo: Repository, clock: PrimaryClock,
                 spool: Spool, events: Reporter, settings: ArchiveSettings, make_base: MakeBase
                 ) -> None:
        self.cluster, self.table, self.repo, self.clock = cluster, table, repo, clock
        self.spool, self.events, self.settings, self.make_base = spool, events, settings, make_base
        self.state = TableLog()
        self._name = str(table)
        self._key = repo.log_table_key(self._name)
        self._stop = asyncio.Event()
        self._causes: list[str] = ["start"]

    def stop(self) -> None:
        self._stop.set()

    @property
    def restorable(self) -> bool:
        """The current timeline has a base and a sealed slice past it."""
        st = self.state
        return (st.restorable_from is not None and st.sealed_until is not None
                and st.sealed_until > st.restorable_from)

    async def run(self) -> None:
        """Keep the table's log until ``stop()``; errors are reported and retried."""
        delay = BACKOFF_FIRST
        self._causes = ["start"]  # breaks since the last base was written (in its marker)
        while not self._stop.is_set():
            try:
                await self._timeline()
                delay = BACKOFF_FIRST
            except Stopped:  # asked to stop before the new feed was ready: nothing to seal
                return
            except Break as brk:  # the next timeline starts at once
                self._note_break(brk.reason, str(brk))
                delay = BACKOFF_FIRST
            except Exception as err:  # noqa: BLE001 - a bug must not end the log silently
                self._note_break(_cause(err), str(err) if isinstance(err, DrtoolError) else
                                 f"internal error {type(err).__name__}: {err}")
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _note_break(self, reason: str, detail: str) -> None:
        self._causes.append(reason)
        self.state.breaks[reason] = self.state.breaks.get(reason, 0) + 1
        self.state.last_break = f"{reason}: {detail}"
        self.events.warn("log-break", f"{self._name}: the change log broke ({reason}: {detail}); "
                         "a new timeline starts with a new base", table=self._name,
                         cause=reason)
        self.events.metrics.log_break(self._name, reason)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _timeline(self) -> None:
        """One timeline, until a break (raised) or ``stop()``."""
        feed = self.cluster.changes(self.table, queue_size=self.settings.queue_size)
        async with aclosing(feed):
            await unless_stopped(self._stop, feed_ready(feed, self._name))
            opened = self.clock.now_ms()
            timeline = new_timeline(opened)
            self.state.timeline, self.state.base = timeline, None
            self.state.restorable_from = None
            self.events.emit("log-timeline", f"{self._name}: timeline {timeline} started",
                             table=self._name, timeline=timeline)
            current = OpenSlice(t0=opened)
            previous = "base"
            problem: list[BaseException] = []

            async def read() -> None:
                try:
                    async for event in feed:
                        if isinstance(event, FeedChange):
                            current.add(self.clock.now_ms(), event.key, event.doc)
                        elif isinstance(event, FeedOverflow):
                            raise Break("feed-overflow", f"the changefeed overflowed: "
                                        f"{event.message}")
                    raise ClusterUnreachable(f"{self._name}: the changefeed ended")
                except asyncio.CancelledError:
                    raise
                except BaseException as err:  # handed to the sealing loop
                    problem.append(err)

            async def seal(slice_: OpenSlice, t1: int) -> None:
                nonlocal previous
                name = slice_name(self._key, timeline, slice_.t0, t1)
                header = SliceHeader(self._name, timeline, slice_.t0, t1, previous, len(slice_))
                blob = await self.repo.seal_slice(name, encode_slice(header, slice_.entries()))
                try:
                    await self.spool.put(name, blob)
                except SpoolFull as err:
                    raise Break("spool-full", str(err)) from None
                previous = name
                self.state.sealed_until = t1
                self.events.metrics.slice_sealed(self._name, len(slice_), len(blob))

            reader = asyncio.create_task(read(), name=f"archive {self._name} feed")
            base = asyncio.create_task(self._bases(timeline, opened),
                                       name=f"archive {self._name} bases")
            every = int(self.settings.slice_every * 1000)
            try:
                while True:
                    await self._sleep(SEAL_CHECK)
                    if problem:
                        raise problem[0]  # the open slice is dropped: it may miss changes
                    if base.done() and base.exception() is not None:
                        raise base.exception()  # type: ignore[misc]
                    now = self.clock.now_ms()
                    due = (now - current.t0 >= every
                           or current.nbytes >= self.settings.max_slice_bytes)
                    if due or self._stop.is_set():
                        done, t1 = current, max(now, current.last_stamp + 1)
                        current = OpenSlice(t0=t1)
                        await seal(done, t1)
                    if self._stop.is_set():
                        return
            finally:
                for task in (reader, base):
                    task.cancel()
                await asyncio.gather(reader, base, return_exceptions=True)

    async def _bases(self, timeline: str, opened: int) -> None:
        """The timeline's first base, then one every ``base_every`` seconds (incremental
        snapshots: cheap), so that a restore reads the slices since the newest base only and
        log retention can drop the slices before a kept base."""
        await self._base(timeline, opened)
        while self.settings.base_every:
            await asyncio.sleep(self.settings.base_every)
            await self._base(timeline, self.clock.now_ms())

    async def _base(self, timeline: str, opened: int) -> None:
        """Write a base of the timeline whose changes are all in its slices from ``opened``
        on (retried while the repository or cluster is down)."""
        delay = BACKOFF_FIRST
        while True:
            try:
                extra = {"log": {"table": self._name, "timeline": timeline, "from": opened}}
                snapshot = await self.make_base(self.table, extra)
                complete = self.clock.now_ms()
                marker = {"format": "drtool-log-base", "version": 1, "table": self._name,
                          "timeline": timeline, "snapshot": snapshot, "from": opened,
                          "restorable_from": complete, "after": list(self._causes)}
                await self.repo.put_base_marker(
                    base_name(self._key, timeline, snapshot),
                    json.dumps(marker, sort_keys=True, separators=(",", ":")).encode())
                self.state.base = snapshot
                if self.state.restorable_from is None:  # the timeline's window starts here
                    self.state.restorable_from = complete
                self._causes = []
                self.events.metrics.restorable_from(self._name, complete / 1000)
                self.events.emit("log-base", f"{self._name}: base {snapshot} of timeline "
                                 f"{timeline} written", table=self._name, snapshot=snapshot)
                return
            except (ClusterUnreachable, StorageUnreachable) as err:
                self.events.warn("log-base-retry", f"{self._name}: writing the base: {err}; "
                                 f"retrying in {delay:g} s", table=self._name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
