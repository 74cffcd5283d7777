"""Changefeeds of the fake cluster: the feed queue and ``changes`` (a mixin of FakeCluster).

Follows the real server (see the contract suite): a feed yields FeedReady, then every change
of its table in order; when more than the feed's queue size of changes wait unread, the new
ones are dropped and one FeedOverflow, with the server's message and the number dropped,
sits where they would have been; the feed then goes on. A feed ends with the error its queue
is failed with: ClusterUnreachable when the connection is closed or the server is "down", a
ClusterError when its table or database is dropped. A feed opened with ``gather`` answers at
most once per ``gather`` seconds (FeedReady counting as the first answer) and merges the
unsent changes of one document into the last of them, like the server's numeric ``squash``; a
document created and deleted again within one answer is not reported at all.
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
    (seconds), the items are handed over in answers at most ``gather`` apart, and a change of
    a document whose earlier change is still unsent replaces it (both vanish when the document
    was created by the first and deleted by the second). Raises nothing itself:
    ``get`` raises the error the queue was failed with, once it is drained."""

    def __init__(self, limit: int, owner: object, gather: float = 0.0) -> None:
        self.limit = limit
        self.owner = owner  # the FakeCluster that opened it
        self.gather = gather
        self.items: deque = deque()  # at the "server", not yet sent
        self.answer: deque = deque()  # the answer being read
        self.answered = time.monotonic()  # of the last answer (FeedReady is the first)
        self.created: set[str] = set()  # keys of unsent changes that created their document
        self.waiting = 0  # FeedChange items queued
        self.error: Exception | None = None
        self.event = asyncio.Event()

    def push(self, change: FeedChange, existed: bool = True) -> None:
        """Queue ``change``; ``existed``: its document was there before it."""
        if self.gather > 0 and self._merge(change):
            return
        if self.waiting >= self.limit:
            self.skip(1)
            return
        self.items.append(change)
        self.waiting += 1
        if not existed:
            self.created.add(change.key)
        self.event.set()

    def _merge(self, change: FeedChange) -> bool:
        """Fold ``change`` into an unsent change of the same document; False if none."""
        for i, item in enumerate(self.items):
            if isinstance(item, FeedChange) and item.key == change.key:
                if change.doc is None and change.key in self.created:
                    del self.items[i]  # created and deleted within one answer: nothing
                    self.created.discard(change.key)
                    self.waiting -= 1
                else:
                    self.items[i] = change
                return True
        return False

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
        self.created.clear()


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
