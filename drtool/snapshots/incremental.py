"""Incremental snapshots: store only what changed since the table's previous snapshot.

The previous snapshot's table (the *parent*) keeps its base segments' key ranges. For each
range the server computes its digest; a range whose digest equals the parent's and that
received no change meanwhile is carried over untouched (nothing read, nothing uploaded). A
changed range is read, its documents' hashes are compared with the parent's (from index
objects, readable with the writer key alone), and only documents that are new or changed are
stored, in a new delta layer, with the keys that disappeared. The same changefeed discipline as
a full snapshot applies (snapshots.snapshot): changes received for a range before it is processed
are folded in; late ones make their range be processed again into a second layer.

When should the next snapshot be full? ``needs_full`` says so when the chain of delta layers is
``max_layers`` deep or the deltas have grown past ``max_delta_ratio`` of the base.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

from drtool.cluster.base import Cluster, Row
from drtool.snapshots.layers import ParentState
from drtool.cluster.scanning import FeedCollector, resumable_scan
from drtool.snapshots.segments import (
    Chunker,
    PendingChanges,
    SegmentWriter,
    encode_deletions,
    merge_changes,
)
from drtool.reql.digest import digest_of_texts, fold_digests, r_uuid
from drtool.repo.manifest import Layer, Range, SegmentRef, TableEntry
from drtool.model import KeyText, TableMeta, TableName, utcnow
from drtool.reql.ordering import key_order
from drtool.repo.repository import Repository
from drtool.util.throttle import RateLimiter

DELETIONS_PER_OBJECT = 50_000


def needs_full(parent: TableEntry, meta: TableMeta, *, max_layers: int, max_delta_ratio: float) -> str | None:
    """Why the table must be snapshot in full instead of on top of ``parent`` (None: it
    need not)."""
    if parent.meta.primary_key != meta.primary_key:
        return "primary key changed"
    base = parent.layers[0]
    if len(parent.ranges) != len(base.segments) or any(s.index is None for s in base.segments):
        return "previous snapshot has no usable index"
    if len(parent.layers) >= max_layers:
        return f"chain of {len(parent.layers) - 1} delta layers"
    deltas = sum(layer.stored_size for layer in parent.layers[1:])
    if deltas > max_delta_ratio * max(base.stored_size, 1):
        return f"deltas are {deltas / max(base.stored_size, 1):.0%} of the base"
    return None


@dataclass
class _Delta:
    """One new layer being written: upserted documents and deleted keys, in key order."""

    writer: SegmentWriter
    deleted: list[KeyText] = field(default_factory=list)
    upserts: int = 0

    async def add(self, upserts: list[Row], deleted: list[KeyText]) -> None:
        if upserts:
            self.upserts += len(upserts)
            await self.writer.add(upserts)
        self.deleted.extend(deleted)

    async def finish(self, repo: Repository) -> tuple[Layer | None, int]:
        if not self.upserts and not self.deleted:
            await self.writer.abort()
            return None, 0
        segments = await self.writer.finish() if self.upserts else []
        deletions, new = await _store_deletions(repo, self.deleted)
        return Layer(tuple(segments), tuple(deletions)), self.writer.bytes_new + new


async def _store_deletions(repo: Repository, keys: list[KeyText]) -> tuple[list[SegmentRef], int]:
    refs, new = [], 0
    for start in range(0, len(keys), DELETIONS_PER_OBJECT):
        chunk = keys[start:start + DELETIONS_PER_OBJECT]
        last = start + DELETIONS_PER_OBJECT >= len(keys)
        stored = await repo.put_index(encode_deletions(chunk))
        new += stored.stored_size if stored.new else 0
        refs.append(SegmentRef(stored.id, None if last else chunk[-1], len(chunk), "",
                               len(encode_deletions(chunk)), stored.stored_size))
    return refs, new


def _compare(rows: list[Row], before: dict[KeyText, str | None]) -> tuple[list[Row], list[KeyText]]:
    """Rows that differ from ``before`` (key -> r.uuid of the text, None = absent) and keys
    gone."""
    before = dict(before)
    upserts = [(k, d) for k, d in rows if before.pop(k, None) != r_uuid(d)]
    deleted = sorted((k for k, h in before.items() if h is not None), key=key_order)
    return upserts, deleted


async def incremental_table(
    repo: Repository, cluster: Cluster, table: TableName, parent: TableEntry, collector: FeedCollector,
    pending: PendingChanges, meta: TableMeta, chunker: Chunker, *, started: str, batch_size: int,
    settle: float, progress, task: str, reads: RateLimiter | None = None,
) -> tuple[TableEntry, int] | None:
    """Write a delta over ``parent``; the feed (``collector``) must be ready. Returns the entry
    and bytes uploaded, or None when the feed overflowed (the caller starts again)."""
    parent_state = ParentState(repo, parent)
    ranges = list(parent.ranges)
    bounds = [None] + [r.upto for r in ranges[:-1]]
    digests = [digest for _, digest in await cluster.segment_digests(
        table, [(bounds[i], ranges[i].upto) for i in range(len(ranges))])]
    first = _Delta(SegmentWriter(repo, chunker))
    emitted: dict[int, dict[KeyText, str | None]] = {}

    async def process(i: int, changes, delta: _Delta, base: dict[KeyText, str | None]) -> None:
        rows: list[Row] = []
        async for batch in resumable_scan(cluster, table, after=bounds[i], upto=ranges[i].upto,
                                          batch_size=batch_size, reads=reads):
            rows.extend(batch)
        rows = merge_changes(rows, changes)
        upserts, deleted = _compare(rows, base)
        emitted[i] = {**emitted.get(i, {}), **{k: r_uuid(d) for k, d in upserts},
                      **{k: None for k in deleted}}
        await delta.add(upserts, deleted)
        ranges[i] = Range(ranges[i].upto, len(rows), digest_of_texts(d for _, d in rows))

    async def process_by_hashes(i: int, delta: _Delta, base: dict[KeyText, str | None]) -> None:
        """A changed range with no feed change received: compare the server's per-document
        hashes with the parent's and fetch only the documents that differ. The range digest is
        the one the server just computed; a write landing meanwhile reaches the feed and makes
        the range late (read again in full at the end)."""
        current: list[tuple[KeyText, str]] = []
        async for batch in resumable_scan(cluster, table, after=bounds[i], upto=ranges[i].upto,
                                          batch_size=5 * batch_size, reads=reads, hashes=True):
            current.extend(batch)
        changed = [k for k, u in current if base.get(k) != u]
        present = {k for k, _ in current}
        deleted = sorted((k for k, h in base.items() if h is not None and k not in present),
                         key=key_order)
        upserts: list[Row] = []
        for start in range(0, len(changed), batch_size):
            upserts.extend(await cluster.get_docs(table, changed[start:start + batch_size]))
        emitted[i] = {**emitted.get(i, {}), **{k: r_uuid(d) for k, d in upserts},
                      **{k: None for k in deleted}}
        await delta.add(upserts, deleted)
        ranges[i] = Range(ranges[i].upto, len(current), digests[i])

    try:
        for i, r in enumerate(ranges):
            changes = pending.take_upto(r.upto if i + 1 < len(ranges) else None)
            collector.check()
            if collector.overflows:
                return None
            if changes:
                await process(i, changes, first, await parent_state.hashes(i))
            elif digests[i] != r.digest:
                await process_by_hashes(i, first, await parent_state.hashes(i))
            progress.advance(task, r.count, 0)
        layers, bytes_new = list(parent.layers), 0
        layer, new = await first.finish(repo)
        if layer:
            layers.append(layer)
            bytes_new += new
        await asyncio.sleep(settle)
        collector.check()
    finally:
        await first.writer.abort()
        await collector.close()
    if collector.overflows:
        return None
    if pending.late:
        late = _Delta(SegmentWriter(repo, chunker))
        upper = [key_order(r.upto) for r in ranges[:-1]]
        for i in sorted({bisect.bisect_left(upper, key_order(k)) for k in pending.late}):
            before = {**await parent_state.hashes(i), **emitted.get(i, {})}
            await process(i, [], late, before)
        layer, new = await late.finish(repo)
        if layer:
            layers.append(layer)
            bytes_new += new
    entry = TableEntry(
        meta=meta, doc_count=sum(r.count for r in ranges),
        digest=fold_digests(r.digest for r in ranges), ranges=tuple(ranges),
        layers=tuple(layers), started=started, finished=utcnow(),
    )
    return entry, bytes_new
