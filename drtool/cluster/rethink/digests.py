"""Digests on a real server: the ReQL of ``segment_digests``, ``range_digest`` and
``chunk_digests`` (a mixin of drtool.cluster.rethink.cluster.RethinkCluster).

Every digest is computed by the server, so no document crosses the network: ``r.uuid`` of the
documents' ``to_json_string()`` texts folded in primary-key order, exactly as drtool.reql.digest
does on the client (the contract suite checks both against shared/reql-golden.json). Ranges
are ``(after, upto]`` as in drtool.cluster.rethink.cluster; a whole list of ranges is sent as
one JSON spec (``chunk_spec``) and evaluated with ``r.json(spec).map``/``concat_map``.
Errors are the session's (drtool errors only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from drtool.cluster.base import (
    PER_DOC, ChunkDigest, KeyRange, Window, chunk_spec, segment_digest_groups,
)
from drtool.model import KeyText, TableName

ARRAY_LIMIT = 1 << 30  # segment_digests builds one array of hashes per range on the server


class RethinkDigestsMixin:
    """Implements the digest part of drtool.cluster.base.Cluster with ``self._r`` and
    ``self._session`` (see RethinkCluster)."""

    _r: Any
    _session: Any

    async def segment_digests(self, table: TableName,
                              ranges: Sequence[KeyRange]) -> list[tuple[int, str]]:
        if not ranges:
            return []
        pk, r, tbl = await self._primary_key(table), self._r, self._table(table)

        def digest(p: Any) -> Any:  # p = [index, after or null, upto or null]
            rows = tbl.between(r.branch(p.nth(1).eq(None), r.minval, p.nth(1)),
                               r.branch(p.nth(2).eq(None), r.maxval, p.nth(2)),
                               left_bound="open", right_bound="closed", index=pk)
            hashes = rows.order_by(index=pk).map(lambda d: r.uuid(d.to_json_string()))
            return hashes.coerce_to("array").do(
                lambda a: [p.nth(0), a.count(), r.uuid(a.to_json_string())])

        # Consecutive groups of ranges in parallel queries: the server folds them on
        # several cores at once.
        groups = [[(i, ranges[i]) for i in g] for g in segment_digest_groups(len(ranges))]

        async def run(group: list) -> list:
            spec = chunk_spec([rg for _, rg in group], None)
            rows = await self._session.fetch(r.json(spec).map(digest), table,
                                             array_limit=ARRAY_LIMIT)
            return [(group[int(i)][0], int(n), str(d)) for i, n, d in rows]

        results = await asyncio.gather(*(run(g) for g in groups))
        return [(n, d) for _, n, d in sorted(row for rows in results for row in rows)]

    async def range_digest(self, table: TableName, *, after: KeyText | None = None,
                           upto: KeyText | None = None) -> str:
        pk, r = await self._primary_key(table), self._r
        query = self._range(table, pk, after, upto).fold(
            "", lambda acc, d: r.uuid(acc.add(d.to_json_string())))
        return str(await self._session.fetch(query, table))


    async def chunk_digests(self, table: TableName, ranges: Sequence[KeyRange], *,
                            threshold: str, windows: Sequence[Window] | None = None,
                            keys: bool = True, digest_chars: int = 36) -> list[list[ChunkDigest]]:
        if not ranges:
            return []
        pk, r = await self._primary_key(table), self._r
        query = r.json(chunk_spec(ranges, windows)).concat_map(
            self._chunk_fold(table, pk, threshold, windows is not None, keys, digest_chars))
        out: list[list[ChunkDigest]] = [[] for _ in ranges]
        for row in await self._session.fetch(query, table):
            i, key, count, digest = row if keys else (row[0], None, row[1], row[2])
            upto = ranges[int(i)][1] if keys and key is None else key
            out[int(i)].append((upto, int(count), str(digest)))
        return out

    def _chunk_fold(self, table: TableName, pk: str, threshold: str, windowed: bool, keys: bool,
                    digest_chars: int) -> Callable[[Any], Any]:
        """The ReQL of ``chunk_digests`` for one element ``p`` of the spec (see chunk_spec):
        a fold whose accumulator is ``[count, digest, cut]``, ``cut`` being the document's
        key hash when that document ends a chunk, else ``''``."""
        r, tbl = self._r, self._table(table)
        start_after_cut = "" if threshold == PER_DOC else None  # None: the cut key's hash

        def emitted(digest: Any) -> Any:  # the last digest_chars characters ('' stays '')
            if digest_chars >= 36 or isinstance(digest, str):
                return digest
            return digest.slice(36 - digest_chars)

        def row(i: Any, key: Any, count: Any, digest: Any) -> list:
            return [i, key, count, emitted(digest)] if keys else [i, count, emitted(digest)]

        def cut_of(d: Any) -> Any:
            if not threshold:  # one chunk per range: no key hash needed
                return ""
            return r.uuid(d[pk].to_json_string()).do(lambda h: r.branch(h.lt(threshold), h, ""))

        def step(acc: Any, d: Any) -> Any:
            seed = acc.nth(2) if start_after_cut is None else start_after_cut
            return r.branch(acc.nth(2).eq(""), acc, r.expr([0, seed])).do(lambda b: [
                b.nth(0).add(1), r.uuid(b.nth(1).add(d.to_json_string())), cut_of(d)])

        def fold_range(p: Any) -> Any:  # p = [index, after or null, upto or null | skip, limit]
            i = p.nth(0)
            upto = r.maxval if windowed else r.branch(p.nth(2).eq(None), r.maxval, p.nth(2))
            rows = tbl.between(r.branch(p.nth(1).eq(None), r.minval, p.nth(1)), upto,
                               left_bound="open", right_bound="closed", index=pk).order_by(index=pk)
            if windowed:  # keyset pagination, then positions: reads skip + limit documents
                rows = rows.skip(p.nth(2)).limit(p.nth(3))
            elif not threshold:
                # One chunk: the same chained digest from a plain fold, and the count from the
                # index (measured on 2.4.4, 200,000 documents: 2.0 s + 0.07 s against 3.1 s
                # for the general accumulator).
                digest = rows.fold("", lambda acc, d: r.uuid(acc.add(d.to_json_string())))
                return [row(i, None, rows.count(), digest)]
            return rows.fold(
                [0, "", ""], step,
                emit=lambda old, d, new: r.branch(
                    new.nth(2).eq(""), [],
                    [row(i, d[pk].to_json_string() if keys else None, new.nth(0), new.nth(1))]),
                final_emit=lambda acc: r.branch(
                    acc.nth(2).eq(""), [row(i, None, acc.nth(0), acc.nth(1))],
                    [row(i, None, 0, acc.nth(2) if start_after_cut is None else "")]))

        return fold_range
