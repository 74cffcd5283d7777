"""Comparing a live cluster's tables with a snapshot, by the snapshot's recorded range digests.

The snapshot recorded, per table, the digest and count of each key range of its final state
(``TableEntry.ranges``). The live cluster folds the same ranges on the server (one query, only
counts and digests cross the network) and equal ranges are done. For a differing range the
keys are listed when the repository can decrypt documents and the table is a single layer:
the segment of that range is read from the repository and its per-document hashes
(``doc_hash`` of each text) are merged with the live side's ``(key, r.uuid(doc))`` pairs of
the range. Otherwise only the counts and the number of differing ranges are reported.
"""

from __future__ import annotations

import asyncio
import time

from drtool.cluster import canonical
from drtool.cluster.base import ChunkDigest, Cluster, KeyRange
from drtool.core.tasks import gather_bounded
from drtool.core.diff import DiffOptions, TableDiff, compare_schema, table_meta_or_none
from drtool.core.diff_ranges import PER_DOC, WHOLE, Differences, Side, merge_docs
from drtool.core.progress import NullProgress, Progress
from drtool.core.segments import decode_segment
from drtool.core.session import select_tables
from drtool.digest import doc_hash
from drtool.manifest import Manifest, TableEntry
from drtool.model import TableName
from drtool.policy import Policy
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
    progress: Progress = NullProgress(),
) -> TableDiff:
    started = time.monotonic()
    task = f"diff {table}"
    progress.start(task, entry.doc_count if entry else None)
    try:
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
            await _compare_ranges(side, repo, entry, result)
        result.traffic.add(side.traffic)
        result.seconds = time.monotonic() - started
        return result
    finally:
        progress.finish(task)


def recorded_ranges(entry: TableEntry) -> list[KeyRange]:
    bounds = [None] + [r.upto for r in entry.ranges[:-1]]
    return [(after, r.upto) for after, r in zip(bounds, entry.ranges)]


async def _compare_ranges(side: Side, repo: Repository, entry: TableEntry, result: TableDiff) -> None:
    ranges = recorded_ranges(entry)
    live = await side.chunks(ranges, WHOLE)
    result.source_count = sum(c[0][1] for c in live)
    differing = [i for i, (c, rec) in enumerate(zip(live, entry.ranges))
                 if (c[0][1], c[0][2]) != (rec.count, rec.digest)]
    if not differing:
        return
    base = entry.layers[0].segments if entry.layers else ()
    readable = (repo.can_read_data and len(entry.layers) == 1 and not entry.layers[0].deletions
                and [s.upto for s in base] == [r.upto for r in entry.ranges])
    if not readable:
        result.keys_listed = False
        result.ranges_differing = len(differing)
        why = ("the table is stored as delta layers" if repo.can_read_data else
               "set encryption.identity_file or passphrase_env to list keys")
        result.notes.append(f"{len(differing)} of {len(ranges)} recorded ranges differ; keys "
                            f"not listed ({why})")
        return
    found = Differences()
    per_doc = await side.chunks([ranges[i] for i in differing], PER_DOC)
    snapshot = await asyncio.gather(*(_segment_hashes(repo, base[i].id, entry.meta.primary_key)
                                      for i in differing))
    for i, live_docs, snap_docs in zip(differing, per_doc, snapshot):
        merge_docs(live_docs, snap_docs, found)
        found.regions.append(ranges[i])
    result.set_keys(found)


async def _segment_hashes(repo: Repository, object_id: str, primary_key: str) -> list[ChunkDigest]:
    """``(key, 1, doc_hash)`` of every document of a stored segment, in key order."""
    texts = decode_segment(await repo.get_data(object_id))
    return [(canonical.dumps(canonical.parse(t)[primary_key]), 1, doc_hash(t)) for t in texts]
