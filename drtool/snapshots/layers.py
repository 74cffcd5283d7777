"""Reading a snapshot table whose documents are stored as layers.

Layer 0 (the base) tiles the key space with segments; each later layer holds upserted
documents (segments) and deleted keys (deletion lists). The table's state is the merge of the
layers, the latest layer winning per key. Keys come from the segments' index objects, so no
document is parsed.

``final_texts`` streams the merged documents (for restore and verify); ``ParentState`` gives an
incremental snapshot the per-document hashes of one base range without reading any document
(index objects are readable with the writer key alone).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator

from drtool.cluster.base import Row
from drtool.snapshots.segments import decode_index, decode_segment
from drtool.errors import IntegrityError
from drtool.repo.manifest import Layer, SegmentRef, TableEntry
from drtool.model import DocText, KeyText
from drtool.reql.ordering import key_order
from drtool.repo.repository import Repository


async def final_texts(repo: Repository, entry: TableEntry) -> AsyncIterator[tuple[str, list[DocText]]]:
    """Yield ``(object id, texts)`` of the table's final state in key order, one batch per
    base segment (single layer) or per merged run (layered). Every object is authenticated
    before any of its documents is yielded."""
    if len(entry.layers) == 1 and not entry.layers[0].deletions:
        async for ref, texts in _prefetched(repo, entry.layers[0].segments):
            yield ref.id, texts
        return
    async for rows in merged_rows(repo, entry):
        yield "", [text for _, text in rows]


async def _prefetched(repo: Repository, refs: tuple[SegmentRef, ...]):
    """Each segment's texts, fetching the next one while the caller works on the current."""

    async def fetch(ref: SegmentRef) -> list[DocText]:
        return decode_segment(await repo.get_data(ref.id))

    ahead = asyncio.create_task(fetch(refs[0])) if refs else None
    try:
        for i, ref in enumerate(refs):
            texts = await ahead
            ahead = asyncio.create_task(fetch(refs[i + 1])) if i + 1 < len(refs) else None
            yield ref, texts
    finally:
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)


async def _keyed(repo: Repository, layer: Layer, rank: int):
    """(order, rank, key, text) of a layer's upserts, then a separate stream for deletions."""
    async for ref, texts in _prefetched(repo, layer.segments):
        keys = await segment_keys(repo, ref)
        if len(keys) != len(texts):
            raise IntegrityError(f"index object {ref.index} does not match data object {ref.id}")
        yield ref.id, [(key_order(k), rank, k, t) for (k, _), t in zip(keys, texts)]


async def _deleted(repo: Repository, layer: Layer, rank: int):
    for ref in layer.deletions:
        keys = decode_index(await repo.get_index(ref.id))
        yield ref.id, [(key_order(k), rank, k, None) for k, _ in keys]


async def merged_rows(repo: Repository, entry: TableEntry) -> AsyncIterator[list[Row]]:
    """The table's final state as ``(key, text)`` rows in key order, in runs of up to 1,000:
    the layers merged, the latest winning per key. Keys come from the index objects."""
    streams = []
    for rank, layer in enumerate(entry.layers):
        streams.append(_keyed(repo, layer, -rank))
        streams.append(_deleted(repo, layer, -rank))
    heads: list = []
    buffers: list[list] = [[] for _ in streams]

    async def refill(i: int) -> None:
        while not buffers[i]:
            try:
                _, items = await anext(streams[i])
            except StopAsyncIteration:
                return
            buffers[i] = items[::-1]
        heapq.heappush(heads, (buffers[i][-1][0], buffers[i][-1][1], i))

    for i in range(len(streams)):
        await refill(i)
    out: list[Row] = []
    current = None
    while heads:
        _, _, i = heapq.heappop(heads)
        order, _rank, key, text = buffers[i].pop()
        if order != current:  # the first (latest-layer) item of a key wins
            current = order
            if text is not None:
                out.append((key, text))
                if len(out) >= 1000:
                    yield out
                    out = []
        await refill(i)
    if out:
        yield out


async def segment_keys(repo: Repository, ref: SegmentRef) -> list[tuple[KeyText, str]]:
    if ref.index is None:
        raise IntegrityError(f"data object {ref.id} has no index object (made by an older drtool)")
    return decode_index(await repo.get_index(ref.index))


class ParentState:
    """Per-document hashes of a parent snapshot table, one base range at a time.

    Range ``i`` is ``(ranges[i-1].upto, ranges[i].upto]``; base segment ``i`` covers exactly
    that range (incremental snapshots keep the base's boundaries)."""

    def __init__(self, repo: Repository, entry: TableEntry) -> None:
        self.repo = repo
        self.entry = entry
        self._deltas = [_LayerRanges(layer) for layer in entry.layers[1:]]
        self._cache: dict[str, list[tuple[KeyText, str]]] = {}

    async def hashes(self, i: int) -> dict[KeyText, str]:
        """key -> short hash of every document of range ``i`` in the parent's final state."""
        base = self.entry.layers[0].segments[i]
        state = dict(await self._index(base.index))
        lo = self.entry.ranges[i - 1].upto if i else None
        hi = self.entry.ranges[i].upto
        for delta in self._deltas:
            for ref in delta.overlapping(lo, hi, deletions=False):
                for key, h in await self._index(ref.index):
                    if _within(key, lo, hi):
                        state[key] = h
            for ref in delta.overlapping(lo, hi, deletions=True):
                for key, _ in await self._index(ref.id):
                    if _within(key, lo, hi):
                        state.pop(key, None)
        return state

    async def _index(self, object_id: str | None) -> list[tuple[KeyText, str]]:
        if object_id is None:
            raise IntegrityError("parent snapshot segment has no index object")
        if object_id not in self._cache:
            if len(self._cache) > 16:
                self._cache.pop(next(iter(self._cache)))
            self._cache[object_id] = decode_index(await self.repo.get_index(object_id))
        return self._cache[object_id]


async def range_rows(repo: Repository, entry: TableEntry, i: int) -> list[Row]:
    """The documents of recorded range ``i`` (``(ranges[i-1].upto, ranges[i].upto]``) in the
    snapshot's final state, as ``(key, text)`` rows in key order: base segment ``i`` (which
    covers exactly that range) with the delta layers' upserts and deletions of that range
    applied. Reads only the objects that can hold keys of the range (each data object is
    authenticated before use); keys are ordered client-side only where a delta layer
    touches the range."""
    lo = entry.ranges[i - 1].upto if i else None
    hi = entry.ranges[i].upto

    async def rows_of(ref: SegmentRef) -> list[Row]:
        keys, data = await asyncio.gather(segment_keys(repo, ref), repo.get_data(ref.id))
        docs = decode_segment(data)
        if len(keys) != len(docs):
            raise IntegrityError(f"index object {ref.index} does not match data object {ref.id}")
        return [(k, d) for (k, _), d in zip(keys, docs)]

    base = await rows_of(entry.layers[0].segments[i])
    state: dict[KeyText, DocText] | None = None
    for layer in entry.layers[1:]:
        ranges = _LayerRanges(layer)
        for ref in ranges.overlapping(lo, hi, deletions=False):
            state = dict(base) if state is None else state
            state.update((k, d) for k, d in await rows_of(ref) if _within(k, lo, hi))
        for ref in ranges.overlapping(lo, hi, deletions=True):
            state = dict(base) if state is None else state
            for key, _ in decode_index(await repo.get_index(ref.id)):
                state.pop(key, None)
    if state is None:
        return base
    return sorted(state.items(), key=lambda row: key_order(row[0]))


def _within(key: KeyText, lo: KeyText | None, hi: KeyText | None) -> bool:
    order = key_order(key)
    return (lo is None or order > key_order(lo)) and (hi is None or order <= key_order(hi))


class _LayerRanges:
    """Which of a delta layer's objects can hold keys of a given range."""

    def __init__(self, layer: Layer) -> None:
        self.segments = layer.segments
        self.deletions = layer.deletions
        self._bounds = {id(refs): [None if r.upto is None else key_order(r.upto) for r in refs]
                        for refs in (self.segments, self.deletions)}

    def overlapping(self, lo: KeyText | None, hi: KeyText | None, *, deletions: bool):
        refs = self.deletions if deletions else self.segments
        bounds = self._bounds[id(refs)]
        lo_o = None if lo is None else key_order(lo)
        hi_o = None if hi is None else key_order(hi)
        previous = None  # lower bound (exclusive) of the object's range
        for ref, upto in zip(refs, bounds):
            starts_below_hi = hi_o is None or previous is None or previous < hi_o
            ends_above_lo = lo_o is None or upto is None or upto > lo_o
            if starts_below_hi and ends_above_lo:
                yield ref
            previous = upto
