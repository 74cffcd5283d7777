"""In-memory storage behind the fake cluster: tables in server key order, and feed queues.

Internal to ``drtool.cluster.fake``; nothing here raises drtool errors.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field

from drtool.model import FeedChange, FeedOverflow, TableName

OVERFLOW_MESSAGE = "Changefeed cache over array size limit, skipped {n} elements."


@dataclass
class _Skipped:
    count: int


class FeedQueue:
    """One open changefeed: a bounded queue of FeedChange; drops become FeedOverflow in place.

    Like the server, when more than ``limit`` changes wait unread the new ones are dropped and
    one overflow marker (counting them) sits where they would have been."""

    def __init__(self, limit: int, owner: object) -> None:
        self.limit = limit
        self.owner = owner  # the FakeCluster that opened it
        self.items: deque = deque()
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
        while not self.items:
            if self.error is not None:
                raise self.error
            self.event.clear()
            await self.event.wait()
        item = self.items.popleft()
        if isinstance(item, _Skipped):
            return FeedOverflow(OVERFLOW_MESSAGE.format(n=item.count), item.count)
        self.waiting -= 1
        return item


@dataclass
class Table:
    """Documents keyed by the server's B-tree key bytes (``drtool.ordering.key_bytes``)."""

    name: TableName
    primary_key: str = "id"
    shards: int = 1
    replicas: int = 1
    durability: str = "hard"
    write_acks: str = "majority"
    indexes: dict[str, bytes] = field(default_factory=dict)
    write_hook: bytes | None = None
    docs: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # order -> (key, doc)
    feeds: list[FeedQueue] = field(default_factory=list)
    hooked_writes: int = 0  # writes that would have run the write hook
    _sorted: list[bytes] | None = None

    def order(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.docs)
        return self._sorted

    def put(self, order: bytes, key: str, doc: str) -> None:
        if order not in self.docs and self._sorted is not None:
            if not self._sorted or order > self._sorted[-1]:
                self._sorted.append(order)
            else:
                self._sorted = None
        self.docs[order] = (key, doc)
        self.notify(key, doc)

    def delete(self, order: bytes) -> bool:
        entry = self.docs.pop(order, None)
        if entry is None:
            return False
        if self._sorted is not None:
            i = bisect_left(self._sorted, order)
            del self._sorted[i]
        self.notify(entry[0], None)
        return True

    def notify(self, key: str, doc: str | None) -> None:
        for feed in self.feeds:
            feed.push(FeedChange(key, doc))

    def range(self, after: bytes | None, upto: bytes | None, limit: int) -> list[tuple[bytes, str, str]]:
        """Up to ``limit`` entries with ``after < order <= upto`` in order."""
        keys = self.order()
        lo = 0 if after is None else bisect_right(keys, after)
        hi = len(keys) if upto is None else bisect_right(keys, upto)
        hi = min(hi, lo + limit)
        docs = self.docs
        return [(k, *docs[k]) for k in keys[lo:hi]]

    def fail_feeds(self, error: Exception) -> None:
        for feed in list(self.feeds):
            feed.fail(error)
