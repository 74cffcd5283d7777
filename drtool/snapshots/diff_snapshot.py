"""Comparing a live cluster's tables with a snapshot, by the snapshot's recorded range digests.

The snapshot recorded, per table, the digest and count of each key range of its final state
(``TableEntry.ranges``). The live cluster computes the same ranges' digests on the server
(``Cluster.segment_digests``: only counts and digests cross the network) and equal ranges are done. For a differing range the
live side streams ``(key, r.uuid(text))`` pairs and they are merged with the snapshot's
per-document hashes of that range, taken from its index objects (all layers merged): every
differing key is listed, with the writer key alone (no document is decrypted).
"""

from __future__ import annotations

import time

from drtool.cluster.base import ChunkDigest, Cluster, KeyRange
from drtool.util.retry import again_after_lost_connection
from drtool.util.tasks import gather_bounded
from drtool.compare.diff import DiffOptions, TableDiff, compare_schema, table_meta_or_none
from drtool.compare.diff_ranges import QUERY_OVERHEAD, WHOLE, Differences, Side, merge_docs
from drtool.snapshots.layers import ParentState
from drtool.util.progress import NullProgress, Progress
from drtool.config.policy import select_tables
from drtool.reql.ordering import key_order
from drtool.repo.manifest import Manifest, TableEntry
from drtool.model import TableName
from drtool.config.policy import Policy
from drtool.repo.repository import Repository


async def diff_against_snapshot(
    cluster: Cluster, repo: Repository, manifest: Manifest, policy: Policy,
    requested: list[TableName], *, role: str = "primary", options: DiffOptions = DiffOptions(),
    progress: Progress = NullProgress(),
) -> list[TableDiff]:
    """Compare the chosen tables (present live or in the snapshot) with the snapshot."""
    label = f"snapshot {manifest.id}"
    live = await cluster.list_tables()
    tables = select_tables(policy, sorted(set(live) | {t.name for t in manifest.tables}),
                           requested, where=f"{role} or in {label}")
    return await gather_bounded(
        [lambda t=t: diff_table_snapshot(cluster, repo, manifest.table(t), t, role=role,
                                         label=label, options=options, progress=progress)
         for t in tables],
        options.table_concurrency)


async def diff_table_snapshot(
    cluster: Cluster, repo: Repository, entry: TableEntry | None, table: TableName, *,
    role: str, label: str, options: DiffOptions = DiffOptions(),
    progress: Progress = NullProgress(), hashes_of=None,
) -> TableDiff:
    """``hashes_of(i)`` (default: the snapshot's, from its index objects): key -> r.uuid of
    every document ``entry`` holds in recorded range ``i``; a diff against a time passes its
    state's (``entry`` then carries that state's ranges). A lost connection compares the
    table again (drtool.util.retry)."""
    task = f"diff {table}"
    progress.start(task, entry.doc_count if entry else None)
    try:
        return await again_after_lost_connection(
            lambda: _diff_table_snapshot_once(cluster, repo, entry, table, role, label,
                                                options, hashes_of),
            lambda text: progress.note(task, text))
    finally:
        progress.finish(task)


async def _diff_table_snapshot_once(cluster: Cluster, repo: Repository, entry: TableEntry | None,
                                    table: TableName, role: str, label: str,
                                    options: DiffOptions, hashes_of) -> TableDiff:
    started = time.monotonic()
    live_meta = await table_meta_or_none(cluster, table)
    snap_meta = entry.meta if entry else None
    result = TableDiff(table, role, label, live_meta, snap_meta,
                       compare_schema(live_meta, snap_meta))
    result.target_count = entry.doc_count if entry else 0
    side = Side(cluster, table, options.search)
    if live_meta is None or entry is None or live_meta.primary_key != entry.meta.primary_key:
        result.keys_listed = False
        if live_meta is not None:
            (chunks,) = await side.chunks([(None, None)], WHOLE)
            result.source_count = chunks[0][1]
        if live_meta is not None and entry is not None:
            result.notes.append("primary keys differ: documents not compared key by key")
            result.ranges_differing = 1
        else:
            result.missing_count = result.source_count
            result.extra_count = result.target_count
    else:
        await _compare_ranges(side, repo, entry, result, hashes_of)
    result.traffic.add(side.traffic)
    result.seconds = time.monotonic() - started
    return result


def recorded_ranges(entry: TableEntry) -> list[KeyRange]:
    bounds = [None] + [r.upto for r in entry.ranges[:-1]]
    return [(after, r.upto) for after, r in zip(bounds, entry.ranges)]


async def _compare_ranges(side: Side, repo: Repository, entry: TableEntry, result: TableDiff,
                          hashes_of=None) -> None:
    ranges = recorded_ranges(entry)
    live = await side.segment_digests(ranges)
    result.source_count = sum(n for n, _ in live)
    differing = [i for i, (found, rec) in enumerate(zip(live, entry.ranges))
                 if found != (rec.count, rec.digest)]
    if not differing:
        return
    base = entry.layers[0].segments
    if [seg.upto for seg in base] != [r.upto for r in entry.ranges]:  # not made by drtool >= 0.1
        result.keys_listed = False
        result.ranges_differing = len(differing)
        result.notes.append(f"{len(differing)} of {len(ranges)} recorded ranges differ; keys "
                            "not listed (the snapshot's ranges do not follow its segments)")
        return
    found = Differences()
    hashes_of = hashes_of or ParentState(repo, entry).hashes
    for i in differing:
        live_docs = await _live_hashes(side, ranges[i])
        snap = await hashes_of(i)
        snap_docs = sorted(((k, 1, h) for k, h in snap.items()), key=lambda c: key_order(c[0]))
        merge_docs(live_docs, snap_docs, found)
        found.regions.append(ranges[i])
    result.set_keys(found)


async def _live_hashes(side: Side, key_range: KeyRange) -> list[ChunkDigest]:
    """``(key, 1, r.uuid of the text)`` of every live document of the range, in key order; the traffic
    (one query; each row ``["key","uuid"]``) is counted on ``side``."""
    after, upto = key_range
    out: list[ChunkDigest] = []
    async for rows in side.cluster.hash_scan(side.table, after=after, upto=upto):
        out.extend((k, 1, u) for k, u in rows)
        side.traffic.received += sum(len(k) + len(u) + 6 for k, u in rows)
    side.traffic.queries += 1
    side.traffic.sent += QUERY_OVERHEAD + len(after or "") + len(upto or "")
    return out
