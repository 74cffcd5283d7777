"""Reading a table robustly: resumable scans and a changefeed collector."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing
from collections.abc import AsyncIterator

from typing import Protocol

from drtool.cluster.base import Cluster, Row, TextBatch
from drtool.errors import ClusterError, ClusterUnreachable, FeedOverflowed
from drtool.model import (
    DocText, FeedChange, FeedEvent, FeedOverflow, FeedReady, KeyText, TableName,
)
from drtool.util.throttle import RateLimiter


class ChangeSink(Protocol):
    """Where a FeedCollector puts each change (``drtool.snapshots.segments.PendingChanges``)."""

    def record(self, key: KeyText, doc: DocText | None) -> None: ...

READY_TIMEOUT = 60.0
RESUME_ATTEMPTS = 5
RESUME_BASE_DELAY = 0.2


async def resumable_scan(
    cluster: Cluster, table: TableName, *, after: KeyText | None = None,
    upto: KeyText | None = None, batch_size: int = 1000, attempts: int = RESUME_ATTEMPTS,
    reads: RateLimiter | None = None, hashes: bool = False, texts: bool = False,
) -> AsyncIterator[list[Row] | TextBatch]:
    """``cluster.scan`` that survives dropped connections: after a retryable failure it waits
    (exponential backoff) and resumes after the last key received, never starting over.
    Gives up after ``attempts`` consecutive failures without progress.

    ``reads`` (the ``throttle.primary_reads`` limiter, shared by every scan of one snapshot)
    is charged for each batch before it is passed on; batches are then kept to about a tenth
    of a second's budget so the server sees no big bursts. With ``hashes`` the rows are
    ``(key, r.uuid(text))`` pairs (``cluster.hash_scan``) instead of documents; with
    ``texts`` each batch is a ``TextBatch`` (``cluster.scan_texts``)."""
    if reads is not None and reads.rate is not None:
        batch_size = min(batch_size, max(1, int(reads.rate * reads.period)))
    failures = 0
    while True:
        try:
            read = cluster.hash_scan if hashes else cluster.scan_texts if texts else cluster.scan
            async with aclosing(read(table, after=after, upto=upto,
                                     batch_size=batch_size)) as batches:
                async for rows in batches:
                    if not len(rows):
                        continue
                    if reads is not None:
                        await reads.acquire(len(rows))
                    after = rows.last_key() if texts else rows[-1][0]
                    failures = 0
                    yield rows
            return
        except ClusterUnreachable as err:
            failures += 1
            if failures >= attempts:
                raise ClusterUnreachable(
                    f"reading {table} from {cluster.description}: gave up after {failures} "
                    f"failed attempts to resume ({err})"
                ) from None
            await asyncio.sleep(RESUME_BASE_DELAY * 2 ** (failures - 1))


class FeedCollector:
    """Consumes a table's changefeed in a background task into a ChangeSink."""

    def __init__(self, cluster: Cluster, table: TableName, pending: ChangeSink) -> None:
        self.table = table
        self.pending = pending
        self.overflows = 0
        self._feed = cluster.changes(table)
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self._feed:
            if isinstance(event, FeedReady):
                self._ready.set()
            elif isinstance(event, FeedChange):
                self.pending.record(event.key, event.doc)
            elif isinstance(event, FeedOverflow):
                self.overflows += 1

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the feed is ready; raise the feed's error or a timeout error."""
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return
        ready.cancel()
        if self._task in done:
            self._task.result()  # raises the feed's error
            raise ClusterError(f"changefeed on {self.table} ended before it was ready")
        raise ClusterError(f"changefeed on {self.table} not ready after {timeout:.0f} s")

    def check(self) -> None:
        """Raise the feed's error if it failed (a dropped feed loses changes)."""
        if self._task.done() and not self._task.cancelled():
            err = self._task.exception()
            if err is not None:
                raise err
            raise ClusterUnreachable(f"changefeed on {self.table} ended unexpectedly")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self._feed.aclose()


async def feed_ready(feed: AsyncIterator[FeedEvent], name: str) -> None:
    """Wait for a new feed's FeedReady. Raises ClusterUnreachable after ``READY_TIMEOUT``,
    FeedOverflowed when it starts by dropping changes, ClusterError for anything else."""
    try:
        first = await asyncio.wait_for(feed.__anext__(), READY_TIMEOUT)
    except TimeoutError:
        raise ClusterUnreachable(f"{name}: the changefeed was not ready after "
                                 f"{READY_TIMEOUT:g} s") from None
    if isinstance(first, FeedOverflow):
        raise FeedOverflowed(f"{name}: the changefeed overflowed before it was ready: "
                             f"{first.message}")
    if not isinstance(first, FeedReady):
        raise ClusterError(f"{name}: changefeed did not start with ready")
