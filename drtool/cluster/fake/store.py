"""In-memory storage behind the fake cluster: tables in server key order.

Internal to ``drtool.cluster.fake``; nothing here raises drtool errors. Every write to a
``Table`` is pushed to its open feeds (``drtool.cluster.fake.feeds.FeedQueue``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from drtool.cluster.fake.feeds import FeedQueue
from drtool.model import FeedChange, TableName


@dataclass
class Table:
    """Documents keyed by the server's B-tree key bytes (``drtool.reql.ordering.key_bytes``)."""

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
