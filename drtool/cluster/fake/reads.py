"""Reads of the fake cluster: scans, key bounds, digests and point reads (a mixin of FakeCluster).

Follows the real server (see the contract suite): rows come in the server's primary-key order
(``drtool.reql.ordering``), ranges are ``(after, upto]``, ``hash_scan`` pairs each key with the
``r.uuid`` of its document's canonical text, ``range_digest``/``segment_digests``/
``chunk_digests`` fold the texts exactly like the server's ReQL does (drtool.reql.digest). Read
permissions on user tables are not checked. The scan test hooks of ``FakeServer``
(``fail_scan_after``, ``on_scan_row``) act here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence

from drtool.cluster.base import ChunkDigest, KeyRange, Row, Window, fold_chunks
from drtool.reql.digest import digest_of_hashes, fold, r_uuid
from drtool.errors import ClusterUnreachable
from drtool.model import KeyText, TableName


class FakeReadsMixin:
    """Implements the reading half of drtool.cluster.base.Cluster on ``self.server``. Needs:
    the host (FakeCluster) provides ``server`` (the FakeServer), ``description``,
    ``_check(method)`` (a server down or an injected failure raises), ``_table(name)`` (the
    stored table, or NotFound) and ``_bounds(after, upto)`` (a range in key order)."""

    async def _rows(self, method: str, table: TableName, after, upto, batch_size: int):
        self._check(method)
        tbl = self._table(table)
        last, hi = self._bounds(after, upto)
        budget, self.server._scan_fail_after = self.server._scan_fail_after, None
        while True:
            self._check("_scan_batch")
            size = batch_size if budget is None else min(batch_size, budget)
            batch = tbl.range(last, hi, size) if size > 0 else []
            if not batch:
                if budget is not None and budget <= 0 and tbl.range(last, hi, 1):
                    raise ClusterUnreachable(f"{self.description}: lost connection during scan (injected)")
                return
            yield batch
            last = batch[-1][0]
            if budget is not None:
                budget -= len(batch)
            hook = self.server._scan_hook
            if hook is not None:
                for _, key, _doc in batch:
                    out = hook(table, key)
                    if inspect.isawaitable(out):
                        await out

    async def key_bounds(self, table: TableName) -> tuple[KeyText, KeyText] | None:
        self._check("key_bounds")
        tbl = self._table(table)
        order = tbl.order()
        return (tbl.docs[order[0]][0], tbl.docs[order[-1]][0]) if order else None

    async def scan(self, table: TableName, *, after: KeyText | None = None,
                   upto: KeyText | None = None, batch_size: int = 1000) -> AsyncIterator[list[Row]]:
        async for batch in self._rows("scan", table, after, upto, batch_size):
            yield [(key, doc) for _, key, doc in batch]

    async def hash_scan(self, table: TableName, *, after: KeyText | None = None,
                        upto: KeyText | None = None, batch_size: int = 5000):
        async for batch in self._rows("hash_scan", table, after, upto, batch_size):
            yield [(key, r_uuid(doc)) for _, key, doc in batch]

    async def range_digest(self, table: TableName, *, after: KeyText | None = None,
                           upto: KeyText | None = None) -> str:
        self._check("range_digest")
        tbl = self._table(table)
        lo, hi = self._bounds(after, upto)
        return fold(doc for _, _, doc in tbl.range(lo, hi, len(tbl.docs)))

    async def segment_digests(self, table: TableName,
                              ranges: Sequence[KeyRange]) -> list[tuple[int, str]]:
        self._check("segment_digests")
        tbl = self._table(table)
        out = []
        for after, upto in ranges:
            lo, hi = self._bounds(after, upto)
            hashes = [r_uuid(doc) for _, _, doc in tbl.range(lo, hi, len(tbl.docs))]
            out.append((len(hashes), digest_of_hashes(hashes)))
        return out

    async def chunk_digests(self, table: TableName, ranges: Sequence[KeyRange], *,
                            threshold: str, windows: Sequence[Window] | None = None,
                            keys: bool = True, digest_chars: int = 36) -> list[list[ChunkDigest]]:
        self._check("chunk_digests")
        tbl = self._table(table)
        out = []
        for n, (after, upto) in enumerate(ranges):
            lo, hi = self._bounds(after, upto if windows is None else None)
            skip, limit = (0, len(tbl.docs)) if windows is None else windows[n]
            rows = [(key, doc) for _, key, doc in tbl.range(lo, hi, skip + limit)[skip:]]
            out.append(fold_chunks(rows, upto, threshold, keys, digest_chars))
        return out

    async def get_docs(self, table: TableName, keys: Sequence[KeyText]) -> list[Row]:
        self._check("get_docs")
        tbl = self._table(table)
        found = {}
        for key in keys:
            order = self.server._order(key)
            if order in tbl.docs:
                found[order] = tbl.docs[order]
        return [found[o] for o in sorted(found)]
