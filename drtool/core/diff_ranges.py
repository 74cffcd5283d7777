"""Finding the documents that differ between two tables without moving the documents.

Both sides fold key ranges on the server (``Cluster.chunk_digests``) and only keys, counts and
36-character digests cross the network. The search:

1. each given range is folded whole on both sides; equal digests: done;
2. a differing range is cut into content-defined chunks: a chunk ends after every key whose
   ``r.uuid(key)`` is below a threshold, so both sides cut at the same keys (even where
   documents are missing on one side) and chunk sizes are balanced however skewed the keys
   are. The first cut of a big range is wide (about ``sqrt(n)`` chunks, bounded by
   ``top_chunk_min``/``top_chunk_max`` documents each: one pass over the range), later cuts
   narrow (``fanout`` chunks), which minimises bytes per differing document;
3. the two chunk lists are merged on their common cut keys; regions whose digests differ (or
   whose cuts differ) go back to step 2;
4. a region of at most ``leaf_size`` documents on either side is read as ``(key, r.uuid(doc))``
   pairs from both sides (threshold ``'g'``), merged in key order: missing on the target,
   extra on the target, changed.

All ranges of one step go to the server together (one query per side per step, a few more for
very many ranges), both sides in parallel.

Bytes are estimated from what is sent and received (``Traffic``): per query a fixed
``QUERY_OVERHEAD`` (ReQL term of the fold, protocol header, response framing), each key sent as
a bound ``len(key)``, each chunk received ``len(key) + 36 + CHUNK_FRAMING``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from drtool.cluster.base import ChunkDigest, Cluster, KeyRange
from drtool.model import KeyText, TableName
from drtool.ordering import key_order

QUERY_OVERHEAD = 1000  # bytes per query: the ReQL fold term (~870 bytes), headers, response framing
CHUNK_FRAMING = 16  # bytes per chunk besides key and digest: brackets, commas, quotes, index, count
DIGEST_BYTES = 36
WHOLE = ""  # threshold: one chunk per range
PER_DOC = "g"  # threshold: one chunk per document (greater than any hex digit)


@dataclass
class Traffic:
    """Estimated bytes that crossed the network, and queries run, for one side or a sum."""

    queries: int = 0
    sent: int = 0
    received: int = 0

    @property
    def bytes(self) -> int:
        return self.sent + self.received

    def add(self, other: "Traffic") -> None:
        self.queries += other.queries
        self.sent += other.sent
        self.received += other.received

    def to_json(self) -> dict:
        return {"queries": self.queries, "sent": self.sent, "received": self.received,
                "bytes": self.bytes}


@dataclass(frozen=True)
class SearchParams:
    leaf_size: int = 8  # compare per document when a region has at most this many per side
    fanout: int = 4  # chunks per region below the first cut
    top_chunk_min: int = 16  # documents per chunk of the first cut, at least ...
    top_chunk_max: int = 128  # ... and at most (so time stays ~one pass over the table)
    ranges_per_query: int = 2000
    queries_in_flight: int = 4  # per side


def threshold_for(chunk_size: int) -> str:
    """The ``chunk_digests`` threshold giving chunks of ``chunk_size`` documents on average."""
    if chunk_size <= 1:
        return PER_DOC
    return "%08x" % (2**32 // chunk_size)


def _order(key: KeyText | None) -> tuple[int, bytes]:
    """Sort key of an upper bound: None (open end) after every key."""
    return (1, b"") if key is None else (0, key_order(key))


class Side:
    """One cluster's table, with the traffic of the queries run on it."""

    def __init__(self, cluster: Cluster, table: TableName, params: SearchParams) -> None:
        self.cluster, self.table, self.params = cluster, table, params
        self.traffic = Traffic()
        self._slots = asyncio.Semaphore(params.queries_in_flight)

    async def chunks(self, ranges: Sequence[KeyRange], threshold: str) -> list[list[ChunkDigest]]:
        """``chunk_digests`` of many ranges, in groups of ``ranges_per_query`` run in parallel."""
        step = self.params.ranges_per_query
        groups = [list(ranges[i:i + step]) for i in range(0, len(ranges), step)]
        results = await asyncio.gather(*(self._query(g, threshold) for g in groups))
        return [chunks for result in results for chunks in result]

    async def _query(self, ranges: list[KeyRange], threshold: str) -> list[list[ChunkDigest]]:
        async with self._slots:
            result = await self.cluster.chunk_digests(self.table, ranges, threshold=threshold)
        self.traffic.queries += 1
        self.traffic.sent += QUERY_OVERHEAD + len(threshold) + sum(
            len(a or "") + len(u or "") for a, u in ranges)
        self.traffic.received += sum(
            len(key or "") + DIGEST_BYTES + CHUNK_FRAMING for chunks in result for key, _, _ in chunks)
        return result


@dataclass(frozen=True)
class Region:
    """A key range ``(after, upto]`` whose documents differ, with each side's count."""

    after: KeyText | None
    upto: KeyText | None
    source_count: int
    target_count: int
    chunk_size: int = 0  # the chunk size that produced it (0: a given range)

    @property
    def range(self) -> KeyRange:
        return (self.after, self.upto)

    @property
    def size(self) -> int:
        return max(self.source_count, self.target_count)


@dataclass
class Differences:
    """Keys that differ, each list in key order, and the leaf ranges that held them."""

    missing: list[KeyText] = field(default_factory=list)  # on the target
    extra: list[KeyText] = field(default_factory=list)  # on the target
    changed: list[KeyText] = field(default_factory=list)
    regions: list[KeyRange] = field(default_factory=list)
    source_count: int | None = None  # documents in the given ranges, when folded whole
    target_count: int | None = None

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)


def merge_chunks(after: KeyText | None, source: list[ChunkDigest], target: list[ChunkDigest],
                 chunk_size: int) -> list[Region]:
    """Regions between the cut keys both sides share, where the sides differ.

    Both lists tile the same range ``(after, upto]`` (their last chunks end at ``upto``)."""
    out: list[Region] = []
    i = j = 0
    start = after
    while i < len(source) and j < len(target):
        s_count = t_count = s_parts = t_parts = 0
        s_digest = t_digest = ""
        while True:
            s_upto, t_upto = source[i][0], target[j][0]
            s_key, t_key = _order(s_upto), _order(t_upto)
            if s_key <= t_key:
                s_count += source[i][1]
                s_digest, s_parts = source[i][2], s_parts + 1
                i += 1
            if t_key <= s_key:
                t_count += target[j][1]
                t_digest, t_parts = target[j][2], t_parts + 1
                j += 1
            if s_key == t_key:
                end = s_upto
                break
        if s_parts != 1 or t_parts != 1 or s_digest != t_digest:
            if s_count or t_count:
                out.append(Region(start, end, s_count, t_count, chunk_size))
        start = end
    return out


def merge_docs(source: list[ChunkDigest], target: list[ChunkDigest], found: Differences) -> None:
    """Per-document chunk lists of one range -> missing / extra / changed keys."""
    src = [(key_order(k), k, h) for k, n, h in source if n]
    tgt = [(key_order(k), k, h) for k, n, h in target if n]
    i = j = 0
    while i < len(src) or j < len(tgt):
        if j == len(tgt) or (i < len(src) and src[i][0] < tgt[j][0]):
            found.missing.append(src[i][1])
            i += 1
        elif i == len(src) or tgt[j][0] < src[i][0]:
            found.extra.append(tgt[j][1])
            j += 1
        else:
            if src[i][2] != tgt[j][2]:
                found.changed.append(src[i][1])
            i += 1
            j += 1


def _next_chunk_size(region: Region, params: SearchParams, boost: int) -> int:
    n = region.size
    if region.chunk_size == 0:  # first cut of a given range: wide
        size = min(params.top_chunk_max, max(params.top_chunk_min, math.isqrt(n)),
                   n // params.fanout)
    else:
        size = n // (params.fanout * boost)
    if region.chunk_size:
        size = min(size, region.chunk_size // 2)  # always progress, even without cut keys
    return 1 << (size.bit_length() - 1) if size > 1 else size  # powers of 2: fewer queries


async def find_differences(source: Side, target: Side, ranges: Sequence[KeyRange],
                           params: SearchParams = SearchParams()) -> Differences:
    """Every key whose document differs between the two sides within ``ranges``
    (disjoint, any order). ``source_count``/``target_count`` are the documents in them."""
    found = Differences()
    ranges = list(ranges)
    whole_s, whole_t = await asyncio.gather(source.chunks(ranges, WHOLE), target.chunks(ranges, WHOLE))
    found.source_count = sum(c[0][1] for c in whole_s)
    found.target_count = sum(c[0][1] for c in whole_t)
    pending = [
        Region(a, u, s[0][1], t[0][1])
        for (a, u), s, t in zip(ranges, whole_s, whole_t) if s[0][2] != t[0][2]
    ]
    while pending:
        leaves, one_sided, splits = [], [], []
        # Few regions: the fixed cost of a query outweighs chunk bytes, so take bigger steps.
        boost = max(1, min(8, 4 * params.fanout // len(pending)))
        for region in pending:
            if region.source_count == 0 or region.target_count == 0:
                one_sided.append(region)
            elif region.size <= params.leaf_size or _next_chunk_size(region, params, boost) <= 1:
                leaves.append(region)
            else:
                splits.append(region)
        # One chunk size per step (the median region's), so one query per side splits them all.
        size = _next_chunk_size(sorted(splits, key=lambda r: r.size)[len(splits) // 2],
                                params, boost) if splits else 0
        pending = []
        await asyncio.gather(
            _leaves(source, target, leaves, found),
            _one_sided(source, target, one_sided, found),
            _split(source, target, splits, size, pending),
        )
    for keys in (found.missing, found.extra, found.changed):
        keys.sort(key=key_order)
    found.regions.sort(key=lambda r: _order(r[1]))
    return found


async def _leaves(source: Side, target: Side, regions: list[Region], found: Differences) -> None:
    if not regions:
        return
    ranges = [r.range for r in regions]
    src, tgt = await asyncio.gather(source.chunks(ranges, PER_DOC), target.chunks(ranges, PER_DOC))
    for region, s, t in zip(regions, src, tgt):
        merge_docs(s, t, found)
        found.regions.append(region.range)


async def _one_sided(source: Side, target: Side, regions: list[Region], found: Differences) -> None:
    """Regions empty on one side: only the other side's keys are needed."""
    src = [r for r in regions if r.source_count]
    tgt = [r for r in regions if r.target_count]
    s_chunks, t_chunks = await asyncio.gather(
        source.chunks([r.range for r in src], PER_DOC) if src else _nothing(),
        target.chunks([r.range for r in tgt], PER_DOC) if tgt else _nothing(),
    )
    for region, chunks in zip(src, s_chunks):
        merge_docs(chunks, [], found)
        found.regions.append(region.range)
    for region, chunks in zip(tgt, t_chunks):
        merge_docs([], chunks, found)
        found.regions.append(region.range)


async def _nothing() -> list:
    return []


async def _split(source: Side, target: Side, regions: list[Region], size: int,
                 pending: list[Region]) -> None:
    if not regions:
        return
    ranges = [r.range for r in regions]
    threshold = threshold_for(size)
    src, tgt = await asyncio.gather(source.chunks(ranges, threshold), target.chunks(ranges, threshold))
    for region, s, t in zip(regions, src, tgt):
        pending.extend(merge_chunks(region.after, s, t, size))
