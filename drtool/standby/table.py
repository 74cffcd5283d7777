"""Replicating one table from the source cluster to the target, for as long as the runner runs.

A cycle: open the changefeed and wait until it is ready (every write after that is delivered),
then bring the target up to date WITHOUT reading the feed (the server queues its changes,
``changefeed_queue_size``): a table the target lacks is created like the source's and copied
(reads limited by ``primary_reads``), a table it has is repaired by digest comparison
(drtool.compare.reconcile: only what differs is read and written; never a full recopy). Then
stream: the queued and new changes are applied in batches, each batch keeping the last change
per key, upserts as canonical text (``insert(r.json(...), conflict='replace')``, write hook
bypassed) and deletes by key, one batch after the other (so per-key order holds) while the
next batch is read. The feed is opened with ``TableSettings.gather`` (the policy's
``feed_gather``): it asks the server for more changes at most that often, so that a trickle
of single changes costs one answer and one write per few changes, not one each. Applying a
change the copy or repair already wrote is harmless (every write is idempotent) and the feed's later changes win, so the target converges.

Any gap ends the cycle and starts a new one (new feed first, then a repair): a feed overflow,
a dropped connection to either cluster (backoff 1 s doubling to 30 s while the outage lasts,
back to 1 s once the table streams again; every outage is logged once, with its cause, and its
end once, when the table streams again; a repair request, made by the runner when both
clusters answer again, ends the backoff at once), a server restart (the standby may have lost soft-durability writes: the repair finds them). A
target table whose primary key differs is reported as an error and never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import TypeVar

from drtool.cluster.base import Cluster
from drtool.cluster.scanning import feed_ready
from drtool.coordination.state import StateStore, TableState
from drtool.errors import (
    ClusterError,
    ClusterUnreachable,
    DrtoolError,
    NotFound,
    OwnershipError,
    SchemaMismatch,
)
from drtool.model import FeedChange, FeedEvent, FeedOverflow, TableName, WriteResult
from drtool.standby.events import Events
from drtool.standby.table_catchup import CatchUp
from drtool.standby.tableinfo import Stats, TableSettings
from drtool.util.tasks import Stopped, unless_stopped

T = TypeVar("T")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


class Gap(Exception):
    """Changes were lost between source and target: repair the table (``reason``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class TableReplicator:
    """Keeps ``table`` on ``target`` equal to ``table`` on ``source`` (see module doc).

    ``run()`` returns once ``stop()`` was called and what had been read was applied; errors
    never escape it (they are logged, recorded in the table's state and retried), except
    cancellation."""

    def __init__(self, source: Cluster, target: Cluster, table: TableName, store: StateStore,
                 events: Events, settings: TableSettings, *, source_role: str = "primary",
                 target_role: str = "standby") -> None:
        self.source, self.target, self.table = source, target, table
        self.store, self.events, self.settings = store, events, settings
        self.source_role, self.target_role = source_role, target_role
        self.state = "stopped"
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._repair_reason: str | None = None
        self._wake = asyncio.Event()  # a repair request ends a backoff (set by request_repair)
        self._streamed = False  # the current cycle reached streaming (an outage ends it)
        #: when each change read and not yet applied arrived (monotonic), oldest first; the
        #: batch being written holds the first arrival of its changes in ``_writing``
        self._arrivals: deque[float] = deque()
        self._writing: float | None = None
        self.name = str(table)
        self.catchup = CatchUp(self)  # shape, initial copy, repair

    def stop(self) -> None:
        self._stop.set()

    def request_repair(self, reason: str) -> None:
        """Repair the table soon (new feed, then digest comparison), e.g. after the target
        restarted: it may have lost soft-durability writes although no write failed). A
        replicator waiting in its backoff starts its next cycle at once; a request made before
        a cycle begins is covered by that cycle's repair."""
        self._repair_reason = reason
        self._wake.set()

    async def follow_schema(self) -> list[str]:
        """Give the target table the source's indexes and hook now (see CatchUp)."""
        return await self.catchup.follow_schema()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def backlog_age(self) -> float:
        """Seconds the oldest change this replicator has read waits to be applied (0 when it
        has applied everything it read): its share of the replication lag, as this runner
        sees it."""
        oldest = self._writing if self._writing is not None else (
            self._arrivals[0] if self._arrivals else None)
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        reason, delay, lost = "start", BACKOFF_FIRST, False
        try:
            while not self.stopping:
                try:
                    await self._cycle(reason, lost)
                    return
                except Stopped:
                    return
                except Gap as gap:
                    reason, delay, lost = gap.reason, BACKOFF_FIRST, False
                    self.events.warn(gap.reason, f"{self.name}: {gap}; repairing the table",
                                     table=self.name)
                except ClusterUnreachable as err:
                    if self._streamed:  # streaming again since the last outage: a new one
                        lost, delay, self._streamed = False, BACKOFF_FIRST, False
                    if not lost:
                        self.events.warn("connection-lost", f"{self.name}: {err}; retrying "
                                         f"in {delay:g} s", table=self.name)
                    self.events.metrics.error("unreachable")
                    await self.record("repairing", f"connection lost: {err}", quiet=True)
                    reason, lost = "disconnect", True
                    await self._sleep(delay, wake=True)
                    delay = min(delay * 2, BACKOFF_MAX)
                except OwnershipError as err:  # the lease's fence: write nothing until renewed
                    if reason != "lease":
                        self.events.warn("fenced", f"{self.name}: {err}", table=self.name)
                    reason = "lease"
                    await self._sleep(BACKOFF_FIRST, wake=True)
                except NotFound as err:
                    await self._fail("missing", f"{self.name}: {err}", BACKOFF_MAX)
                    reason = "start"
                except SchemaMismatch as err:
                    await self._fail("schema", str(err), BACKOFF_MAX)
                    reason = "start"
                except DrtoolError as err:
                    await self._fail("cluster", f"{self.name}: {err}", delay)
                    reason, delay = "error", min(delay * 2, BACKOFF_MAX)
                except Exception as err:  # noqa: BLE001 - a bug must not end months of running
                    await self._fail("internal", f"{self.name}: internal error "
                                     f"{type(err).__name__}: {err}", BACKOFF_MAX)
                    reason = "error"
        finally:
            await self.record("stopped", None, quiet=True)

    async def _fail(self, kind: str, message: str, wait: float) -> None:
        self.events.metrics.error(kind)
        self.events.warn("table-error", message, table=self.name, kind=kind)
        await self.record("error", message, quiet=True)
        await self._sleep(wait)

    async def _sleep(self, seconds: float, *, wake: bool = False) -> None:
        """Wait ``seconds`` or until stopped (``wake``: or until a repair is requested)."""
        events = [self._stop, self._wake] if wake else [self._stop]
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _cycle(self, reason: str, after_loss: bool) -> None:
        self._repair_reason = None  # this cycle's catch-up covers a request made before it
        self._wake.clear()
        feed = self.source.changes(self.table, queue_size=self.settings.queue_size,
                                   gather=self.settings.gather)
        async with aclosing(feed):
            await self._until_stopped(feed_ready(feed, self.name))
            created = await self._until_stopped(self.catchup.prepare())
            if created:
                await self._until_stopped(self.catchup.copy())
            else:
                await self._until_stopped(self.catchup.repair(reason))
            if after_loss:  # both clusters served the catch-up: the outage is over
                self.events.emit("connection-restored", f"{self.name}: connected again",
                                 table=self.name)
            await self.record("streaming", None)
            self._streamed = True
            await self._stream(feed)

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """Run ``work``; abandon it when the replicator is asked to stop (raises Stopped; the
        next start repairs whatever it left half done)."""
        return await unless_stopped(self._stop, work)

    # --- streaming ------------------------------------------------------------------------
    async def _stream(self, feed: AsyncIterator[FeedEvent]) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.settings.batch_size * 4)
        self._arrivals.clear()
        reader = asyncio.create_task(self._read(feed, queue))
        try:
            while True:
                if self.stopping:
                    reader.cancel()  # stop reading; apply what was read
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
                    with contextlib.suppress(Gap, ClusterUnreachable):
                        while not queue.empty():
                            await self._apply_queued(queue, block=False)
                    return
                await self._apply_queued(queue, block=True)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._arrivals.clear()
            self._writing = None

    async def _read(self, feed: AsyncIterator[FeedEvent], queue: asyncio.Queue) -> None:
        try:
            async for event in feed:
                self._arrivals.append(time.monotonic())
                await queue.put(event)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - handed to the applying side, in order
            await queue.put(err)
            return
        await queue.put(ClusterUnreachable(f"{self.name}: the changefeed ended"))

    async def _apply_queued(self, queue: asyncio.Queue, *, block: bool) -> None:
        """Take one batch from the queue (waiting up to half a second for the first event
        when ``block``) and apply it; raise Gap or the feed's error after applying what
        came before it."""
        batch: dict[str, str | None] = {}
        problem: BaseException | None = None
        if self._repair_reason is not None:
            reason, self._repair_reason = self._repair_reason, None
            raise Gap(reason, f"repair requested after {reason}")
        if block:
            try:
                first = await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                return
            items = [first]
        else:
            items = []
        while len(items) < self.settings.batch_size and not queue.empty():
            items.append(queue.get_nowait())
        taken = [self._arrivals.popleft() for _ in items if self._arrivals]
        self._writing = taken[0] if taken else None
        for item in items:
            if isinstance(item, FeedChange):
                batch.pop(item.key, None)  # keep the LAST change of each key, in order
                batch[item.key] = item.doc
            elif isinstance(item, FeedOverflow):
                problem = Gap("feed-overflow", f"the changefeed overflowed: {item.message}")
                break
            elif isinstance(item, BaseException):
                problem = item
                break
        try:
            if batch:
                await self._apply(batch)
        finally:
            self._writing = None
        if problem is not None:
            raise problem

    async def _apply(self, batch: dict[str, str | None]) -> None:
        docs = [d for d in batch.values() if d is not None]
        keys = [k for k, d in batch.items() if d is None]
        started = time.monotonic()
        await self.write(docs, keys)
        self.events.metrics.batch_latency(time.monotonic() - started)
        self.events.metrics.applied(self.name, len(batch), sum(len(d) for d in docs))
        self.stats.note_applied(len(batch))

    async def write(self, docs: list[str], keys: list[str]) -> None:
        """Upsert ``docs`` and delete ``keys`` (disjoint sets) on the target, concurrently."""
        async def upsert() -> WriteResult:
            return await self.target.insert_texts(self.table, docs, conflict="replace",
                                                  ignore_write_hook=True)

        async def delete() -> WriteResult:
            return await self.target.delete_keys(self.table, keys, ignore_write_hook=True)

        written, deleted = await asyncio.gather(upsert(), delete())
        for result in (written, deleted):
            if result.errors:
                raise ClusterError(f"writing to {self.target_role} table {self.name} failed: "
                                   f"{result.first_error}")
        if written.written != len(docs):
            raise ClusterError(f"writing to {self.target_role} table {self.name}: the server "
                               f"acknowledged {written.written} of {len(docs)} documents")

    # --- state for drtool status ----------------------------------------------------------
    async def record(self, state: str, message: str | None, *, progress: dict | None = None,
                      quiet: bool = False) -> None:
        changed = state != self.state
        self.state = state
        if changed:
            self.events.metrics.table_state(self.name, state)
        if not self.settings.record_state:
            return
        record = TableState(self.table, state, message, progress, self.stats.last_repair)
        if not quiet:
            await self.store.put_table_state(record)
            return
        with contextlib.suppress(DrtoolError):  # the target may be the thing that is down
            await self.store.put_table_state(record)
