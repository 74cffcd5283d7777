"""Finding the documents that differ between two tables without moving the documents.

Both sides fold key ranges on the server (``Cluster.chunk_digests``); only counts, digests
and a few keys cross the network. The search:

1. each given range is folded whole on both sides; equal digests (and counts): done;
2. a differing region is cut into content-defined chunks on both sides: a chunk ends after
   every key whose ``r.uuid(key)`` is below a threshold, so both sides cut at the same keys
   (even where documents are missing on one side) and chunks are balanced however skewed the
   keys are. A chunk's digest also covers the key it starts after, so two equal digests mean
   the same documents between the same keys: equal chunks are *anchors*, and between two
   anchors both sides hold the same key span. Digests of these steps are cut to
   ``DIGEST_CHARS`` (60 random bits);
3. the first cut of a big given range (more than ``keyed_above`` documents) is wide (about
   ``sqrt(n)`` chunks, bounded by ``top_chunk_min``/``top_chunk_max`` documents each: one
   pass over the range) and the SOURCE alone returns its cut keys: the runs of chunks between
   anchors become key ranges, valid on both sides (the target returns counts and digests
   only). Every later cut is narrow (``fanout`` chunks) and returns no key at all: a run is
   addressed on each side by its position in the key range (``(skip, limit)`` windows, from
   the chunk counts);
4. a region of at most ``leaf_size`` documents on either side is read as ``(key,
   r.uuid(doc))`` pairs from both sides (threshold ``PER_DOC``), merged in key order: missing
   on the target, extra on the target, changed.

Exactness does not depend on which chunks get paired: only equal digests are trusted, and an
equal digest pins both the chunk's documents and the key it starts after, so everything
outside the anchors is compared document by document in the end.

All regions of one step go to the server together (one query per side per kind of step, a
few more for very many regions), both sides in parallel.

Bytes are counted as they would cross the network (``Traffic``): per query a fixed
``QUERY_OVERHEAD`` (the serialized fold term, protocol header, response framing; a test checks
that the driver's serialized term fits in it), plus the JSON of the spec sent
(``chunk_spec``, as a JSON string) and of every row received (``[i, key, count, digest]``, or
``[i, count, digest]`` without keys).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from drtool.cluster.base import (
    PER_DOC, ChunkDigest, Cluster, KeyRange, Window, chunk_spec, segment_digest_groups,
)
from drtool.model import KeyText, TableName
from drtool.reql.ordering import key_order

QUERY_OVERHEAD = 1500  # bytes per query: the ReQL fold term (<= 1,300 serialized), headers, framing
DIGEST_CHARS = 16  # digests below the first step: the last 16 of 36 characters (60 random bits)
WHOLE = ""  # threshold: one chunk per range


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
    keyed_above: int = 1024  # a given range bigger than this is first cut with the source's keys
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


def _row_bytes(i: int, chunks: list[ChunkDigest], keys: bool) -> int:
    """JSON bytes of one range's rows as the server sends them (the last chunk's key is null)."""
    last = len(chunks) - 1
    rows = ([i, key if n < last else None, count, digest] if keys else [i, count, digest]
            for n, (key, count, digest) in enumerate(chunks))
    return sum(len(json.dumps(row, ensure_ascii=False, separators=(",", ":"))) + 1
               for row in rows)


def _query_bytes(spec: str) -> int:
    """Bytes sent by one query whose argument is ``spec`` (sent as a JSON string)."""
    return QUERY_OVERHEAD + len(json.dumps(spec, ensure_ascii=False).encode())


class Side:
    """One cluster's table, with the traffic of the queries run on it."""

    def __init__(self, cluster: Cluster, table: TableName, params: SearchParams) -> None:
        self.cluster, self.table, self.params = cluster, table, params
        self.traffic = Traffic()
        self._slots = asyncio.Semaphore(params.queries_in_flight)

    async def chunks(self, ranges: Sequence[KeyRange], threshold: str, *,
                     windows: Sequence[Window] | None = None, keys: bool = True,
                     digest_chars: int = 36) -> list[list[ChunkDigest]]:
        """``chunk_digests`` of many ranges, in groups of ``ranges_per_query`` run in parallel."""
        step = self.params.ranges_per_query
        starts = range(0, len(ranges), step)
        results = await asyncio.gather(*(self._query(
            list(ranges[i:i + step]), None if windows is None else list(windows[i:i + step]),
            threshold, keys, digest_chars) for i in starts))
        return [chunks for result in results for chunks in result]

    async def segment_digests(self, ranges: Sequence[KeyRange]) -> list[tuple[int, str]]:
        """``Cluster.segment_digests`` of ``ranges``, its traffic counted as the server-side
        adapter queries (``segment_digest_groups``): per query ``QUERY_OVERHEAD`` and the
        group's spec sent, a row ``[i, count, digest]`` per range received."""
        found = await self.cluster.segment_digests(self.table, ranges)
        for group in segment_digest_groups(len(ranges)):
            self.traffic.queries += 1
            spec = chunk_spec([ranges[i] for i in group], None)
            self.traffic.sent += _query_bytes(spec)
            self.traffic.received += sum(_row_bytes(n, [(None, *found[i])], False)
                                         for n, i in enumerate(group))
        return found

    async def _query(self, ranges: list[KeyRange], windows: list[Window] | None, threshold: str,
                     keys: bool, digest_chars: int) -> list[list[ChunkDigest]]:
        async with self._slots:
            result = await self.cluster.chunk_digests(
                self.table, ranges, threshold=threshold, windows=windows, keys=keys,
                digest_chars=digest_chars)
        self.traffic.queries += 1
        self.traffic.sent += len(threshold) + _query_bytes(chunk_spec(ranges, windows))
        self.traffic.received += sum(_row_bytes(i, c, keys) for i, c in enumerate(result))
        return result


@dataclass(frozen=True)
class Region:
    """Documents that differ: the key range ``(after, upto]`` (the same span on both sides)
    and, on each side, the window ``(skip, limit)`` of it that holds them."""

    after: KeyText | None
    upto: KeyText | None
    source: Window
    target: Window
    chunk_size: int = 0  # the chunk size that produced it (0: a given range, uncut)

    @property
    def range(self) -> KeyRange:
        return (self.after, self.upto)

    @property
    def source_count(self) -> int:
        return self.source[1]

    @property
    def target_count(self) -> int:
        return self.target[1]

    @property
    def size(self) -> int:
        return max(self.source_count, self.target_count)


@dataclass
class Differences:
    """Keys that differ, each list in key order, and the key ranges that held them (disjoint,
    in key order)."""

    missing: list[KeyText] = field(default_factory=list)  # on the target
    extra: list[KeyText] = field(default_factory=list)  # on the target
    changed: list[KeyText] = field(default_factory=list)
    regions: list[KeyRange] = field(default_factory=list)
    source_count: int | None = None  # documents in the given ranges, when folded whole
    target_count: int | None = None

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)


def differing_runs(source: list[ChunkDigest], target: list[ChunkDigest]
                   ) -> list[tuple[int, int, int, int]]:
    """Runs of chunks between anchors, as index ranges ``(s_lo, s_hi, t_lo, t_hi)``.

    Anchors are chunks with the same count and digest on both sides (a digest found twice on
    one side is never an anchor), taken in order on both sides. Both lists chunk the same
    span, starting after the same key: then each run covers the same key span on both sides,
    whichever chunks were paired."""
    def index(chunks: list[ChunkDigest]) -> tuple[dict, set]:
        at, twice = {}, set()
        for j, (_, count, digest) in enumerate(chunks):
            if (count, digest) in at:
                twice.add((count, digest))
            at[count, digest] = j
        return at, twice

    t_at, t_twice = index(target)
    _, s_twice = index(source)
    anchors, last_j = [], -1
    for i, (_, count, digest) in enumerate(source):
        j = t_at.get((count, digest))
        if j is not None and j > last_j and (count, digest) not in s_twice | t_twice:
            anchors.append((i, j))
            last_j = j
    anchors.append((len(source), len(target)))
    runs, prev_i, prev_j = [], -1, -1
    for i, j in anchors:
        if i > prev_i + 1 or j > prev_j + 1:
            runs.append((prev_i + 1, i, prev_j + 1, j))
        prev_i, prev_j = i, j
    return runs


def split_region(region: Region, source: list[ChunkDigest], target: list[ChunkDigest],
                 chunk_size: int, keyed: bool) -> list[Region]:
    """The regions of ``region`` still differing after a cut. ``keyed``: the source's chunks
    carry their keys and cover the whole range (a first cut), so each run becomes a key
    range; otherwise each run is a window of the same range on each side."""
    out = []
    s_before = [0]
    for _, count, _ in source:
        s_before.append(s_before[-1] + count)
    t_before = [0]
    for _, count, _ in target:
        t_before.append(t_before[-1] + count)
    for s_lo, s_hi, t_lo, t_hi in differing_runs(source, target):
        s_n, t_n = s_before[s_hi] - s_before[s_lo], t_before[t_hi] - t_before[t_lo]
        if not (s_n or t_n):
            continue
        if not keyed:
            out.append(Region(region.after, region.upto, (region.source[0] + s_before[s_lo], s_n),
                              (region.target[0] + t_before[t_lo], t_n), chunk_size))
        elif s_hi == s_lo:  # no source chunk to take keys from (only with a digest collision)
            return [Region(region.after, region.upto, region.source, region.target, chunk_size)]
        else:
            after = region.after if s_lo == 0 else source[s_lo - 1][0]
            out.append(Region(after, source[s_hi - 1][0], (0, s_n), (0, t_n), chunk_size))
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
                           params: SearchParams = SearchParams(), *,
                           target_whole: list[list[ChunkDigest]] | None = None) -> Differences:
    """Every key whose document differs between the two sides within ``ranges``
    (disjoint, any order). ``source_count``/``target_count`` are the documents in them.
    ``target_whole``: the target's ``WHOLE`` chunks of ``ranges`` when the caller has just
    folded them (not queried again)."""
    found = Differences()
    ranges = list(ranges)

    async def whole_of_target() -> list[list[ChunkDigest]]:
        return target_whole if target_whole is not None else await target.chunks(ranges, WHOLE)

    whole_s, whole_t = await asyncio.gather(source.chunks(ranges, WHOLE), whole_of_target())
    found.source_count = sum(c[0][1] for c in whole_s)
    found.target_count = sum(c[0][1] for c in whole_t)
    pending = [
        Region(a, u, (0, s[0][1]), (0, t[0][1]))
        for (a, u), s, t in zip(ranges, whole_s, whole_t) if s[0][1:] != t[0][1:]
    ]
    listed: set[KeyRange] = set()
    while pending:
        listing, keyed, windowed = [], [], []
        # Few regions: the fixed cost of a query outweighs chunk bytes, so take bigger steps.
        boost = max(1, min(8, 4 * params.fanout // len(pending)))
        for region in pending:
            if (not region.source_count or not region.target_count
                    or region.size <= params.leaf_size
                    or _next_chunk_size(region, params, boost) <= 1):
                listing.append(region)
            elif region.chunk_size == 0 and region.size > params.keyed_above:
                keyed.append(region)
            else:
                windowed.append(region)
        pending = []
        await asyncio.gather(
            _list(source, target, listing, found),
            _split(source, target, keyed, params, boost, pending, keyed=True),
            _split(source, target, windowed, params, boost, pending, keyed=False),
        )
        listed.update(r.range for r in listing)
    for keys in (found.missing, found.extra, found.changed):
        keys.sort(key=key_order)
    found.regions = sorted(listed, key=lambda r: _order(r[1]))
    return found


async def _list(source: Side, target: Side, regions: list[Region], found: Differences) -> None:
    """``(key, hash)`` of every document of the regions (on the sides where there are any),
    merged per region."""
    async def docs(side: Side, chosen: list[Region], window) -> list:
        if not chosen:
            return []
        return await side.chunks([r.range for r in chosen], PER_DOC,
                                 windows=[window(r) for r in chosen], digest_chars=DIGEST_CHARS)

    src = [r for r in regions if r.source_count]
    tgt = [r for r in regions if r.target_count]
    s_docs, t_docs = await asyncio.gather(docs(source, src, lambda r: r.source),
                                          docs(target, tgt, lambda r: r.target))
    by_region_s = dict(zip(map(id, src), s_docs))
    by_region_t = dict(zip(map(id, tgt), t_docs))
    for region in regions:
        merge_docs(by_region_s.get(id(region), []), by_region_t.get(id(region), []), found)


async def _split(source: Side, target: Side, regions: list[Region], params: SearchParams,
                 boost: int, pending: list[Region], *, keyed: bool) -> None:
    if not regions:
        return
    # One chunk size per step (the median region's), so one query per side splits them all.
    size = _next_chunk_size(sorted(regions, key=lambda r: r.size)[len(regions) // 2],
                            params, boost)
    threshold, ranges = threshold_for(size), [r.range for r in regions]
    if keyed:
        src, tgt = await asyncio.gather(
            source.chunks(ranges, threshold, digest_chars=DIGEST_CHARS),
            target.chunks(ranges, threshold, keys=False, digest_chars=DIGEST_CHARS))
    else:
        src, tgt = await asyncio.gather(
            source.chunks(ranges, threshold, windows=[r.source for r in regions], keys=False,
                          digest_chars=DIGEST_CHARS),
            target.chunks(ranges, threshold, windows=[r.target for r in regions], keys=False,
                          digest_chars=DIGEST_CHARS))
    for region, s, t in zip(regions, src, tgt):
        pending.extend(split_region(region, s, t, size, keyed))
