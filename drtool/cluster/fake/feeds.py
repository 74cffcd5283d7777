"""Changefeeds of the fake cluster: the feed queue and ``changes`` (a mixin of FakeCluster).

Follows the real server (see the contract suite): a feed yields FeedReady, then every change
of its table in order; when more than the feed's queue size of changes wait unread, the new
ones are dropped and one FeedOverflow, with the server's message and the number dropped,
sits where they would have been; the feed then goes on. A feed ends with the error its queue
is failed with: ClusterUnreachable when the connection is closed or the server is "down", a
ClusterError when its table or database is dropped. A feed opened with ``gather`` answers at
most once per ``gather`` seconds (the first at once), each answer
holding every change made since the last, like a real feed whose CONTINUE requests are paced
(``driver.pace_continues``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from drtool.cluster.base import DEFAULT_FEED_QUEUE
from drtool.model import FeedChange, FeedEvent, FeedOverflow, FeedReady, TableName

OVERFLOW_MESSAGE = "Changefeed cache over array size limit, skipped {n} elements."


@dataclass
class _Skipped:
    count: int


class FeedQueue:
    """One open changefeed: a bounded queue of FeedChange; drops become FeedOverflow in place.

    Like the server, when more than ``limit`` changes wait unread the new ones are dropped and
    one overflow marker (counting them) sits where they would have been. With ``gather``
    (seconds), the items are handed over in answers at most ``gather`` apart. Raises nothing
    itself: ``get`` raises the error the queue was failed with, once it is drained."""

    def __init__(self, limit: int, owner: object, gather: float = 0.0) -> None:
        self.limit = limit
        self.owner = owner  # the FakeCluster that opened it
        self.gather = gather
        self.items: deque = deque()  # at the "server", not yet sent
        self.answer: deque = deque()  # the answer being read
        self.answered = float("-inf")  # when the last answer was handed over
        self.waiting = 0  # FeedChange items queued
        self.error: Exception | None = None
        self.event = asyncio.Event()

    def push(self, change: FeedChange) -> None:
        if self.waiting >= self.limit:
            self.skip(1)
            return
        self.items.append(change)
        self.waiting += 1
        self.event.set()

    def skip(self, n: int) -> None:
        if self.items and isinstance(self.items[-1], _Skipped):
            self.items[-1].count += n
        else:
            self.items.append(_Skipped(n))
        self.event.set()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.event.set()

    async def get(self) -> FeedChange | FeedOverflow:
        if not self.answer:
            await self._next_answer()
        item = self.answer.popleft()
        if isinstance(item, _Skipped):
            return FeedOverflow(OVERFLOW_MESSAGE.format(n=item.count), item.count)
        self.waiting -= 1
        return item

    async def _next_answer(self) -> None:
        while not self.items:
            if self.error is not None:
                raise self.error
            self.event.clear()
            await self.event.wait()
        wait = self.answered + self.gather - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.answered = time.monotonic()
        self.answer, self.items = self.items, deque()


class FakeFeedsMixin:
    """Implements ``changes`` of drtool.cluster.base.Cluster on ``self.server``; the feeds a
    connection opened are in ``self._feeds`` (failed by its ``close``). Needs: the host
    (FakeCluster) provides ``server``, ``_check(method)``, ``_table(name)`` and ``_feeds``."""

    _feeds: list[FeedQueue]

    async def changes(self, table: TableName, *,
                      queue_size: int = DEFAULT_FEED_QUEUE,
                      gather: float = 0.0) -> AsyncIterator[FeedEvent]:
        self._check("changes")
        tbl = self._table(table)
        limit = self.server.changefeed_queue_size or queue_size
        feed = FeedQueue(limit, self, gather)
        tbl.feeds.append(feed)
        self._feeds.append(feed)
        try:
            yield FeedReady()
            while True:
                yield await feed.get()
        finally:
            if feed in tbl.feeds:
                tbl.feeds.remove(feed)
            if feed in self._feeds:
                self._feeds.remove(feed)
