"""Taking a snapshot: each selected table copied into the repository, consistent in itself.

Per table: a changefeed is opened and ready before the scan starts; the scan streams in key
order into content-defined segments; feed changes received during the scan are folded into the
segment of their key range when it is sealed. A change that arrives after its range was sealed
is "late": once the scan has ended and the feed has been drained for ``settle`` seconds, the
ranges holding late changes are read again and their segments replaced. So every write
acknowledged before the table's scan ended is in the snapshot. If the feed overflows (the
server dropped changes) the table is read again from the start; unchanged segments are not
uploaded twice. Tables are not consistent with each other (RethinkDB has no cross-table
snapshot). The manifest is written last: until then the snapshot does not exist.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace

from drtool.cluster.base import Cluster
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.incremental import incremental_table, needs_full
from drtool.cluster.scanning import FeedCollector, resumable_scan
from drtool.util.retry import again_after_lost_connection
from drtool.util.tasks import gather_bounded
from drtool.snapshots.partition import table_parts
from drtool.compare.shape import is_drtool_fence
from drtool.snapshots.segments import Chunker, ChunkParams, PendingChanges, RangedChanges, SegmentWriter
from drtool.errors import ClusterError
from drtool.repo.manifest import Manifest, SegmentRef, TableEntry
from drtool.model import KeyText, TableName, utcnow
from drtool.reql.ordering import key_order
from drtool.repo.objects import new_snapshot_id
from drtool.repo.repository import Repository
from drtool.util.throttle import DocRateLimiter, RateLimiter


@dataclass(frozen=True)
class SnapshotOptions:
    table_concurrency: int = 2
    settle: float = 0.5  # seconds the feed is drained after the scan ends
    max_rereads: int = 3  # full re-reads after feed overflows before giving up
    batch_size: int = 1000  # documents per query where keys are sent (incremental snapshots)
    scan_batch_size: int = 5000  # documents per server batch of a full scan, at most
    scan_parts: int = 4  # key ranges of a table scanned at the same time (snapshots.partition)
    docs_per_part: int = 25_000  # ... at least this many documents (estimated) each
    in_flight: int = 2  # segments being stored at once, per part
    chunks: ChunkParams = ChunkParams()
    full: bool = False  # never build on an earlier snapshot
    max_layers: int = 7  # a table whose chain of delta layers is this deep is copied in full
    max_delta_ratio: float = 0.3  # ... or whose deltas exceed this share of its base
    primary_reads: float | None = None  # documents per second read from the source (None: no limit)
    #: a standby fenced by drtool's write hook (drtool.coordination.standby_fence): per table
    #: ("db.table") the primary's own hook, recorded instead of the fence (a fenced table
    #: without an entry is recorded with no hook: a restore must not refuse every write)
    fenced_hooks: Mapping[str, bytes | None] | None = None


async def take_snapshot(
    repo: Repository, cluster: Cluster, tables: list[TableName], *, policy_name: str,
    source: str, progress: Progress = NullProgress(), options: SnapshotOptions = SnapshotOptions(),
    extra: dict | None = None,
) -> Manifest:
    """Snapshot ``tables`` and write the manifest; return it.

    The whole run holds a shared repository lock (docs/FORMAT.md §8): prune cannot delete an
    object this snapshot found already stored and reuses; put_manifest refuses if the lock
    was lost."""
    async with repo.lock("shared", "snapshot"):
        parents = {} if options.full else await latest_entries(repo, tables)
        reads = DocRateLimiter(options.primary_reads) if options.primary_reads else None  # shared

        def job(table: TableName):
            parent = parents.get(table, (None, None))[1]
            return lambda: snapshot_table(repo, cluster, table, parent=parent, progress=progress,
                                          options=options, reads=reads)

        results = await gather_bounded([job(t) for t in tables], options.table_concurrency)
        existing = await repo.list_snapshots()
        built_on = sorted({parents[e.name][0] for e, _ in results
                           if e.name in parents and len(e.layers) > 1})
        manifest = Manifest(
            id=new_snapshot_id(after=existing[-1] if existing else None),
            time=utcnow(),
            policy=policy_name,
            source=f"{source} ({cluster.description})",
            tables=tuple(entry for entry, _ in results),
            parent=built_on[-1] if built_on else None,
            bytes_new=sum(new for _, new in results),
            extra=dict(extra or {}),
        )
        await repo.put_manifest(manifest)
        return manifest


async def latest_entries(repo: Repository, tables: list[TableName]) -> dict[TableName, tuple[str, TableEntry]]:
    """For each table, the newest snapshot holding it and its entry (manifests are read newest
    first until every table is found)."""
    wanted, found = set(tables), {}
    for sid in reversed(await repo.list_snapshots()):
        if not wanted:
            break
        manifest = await repo.load_manifest(sid)
        for entry in manifest.tables:
            if entry.name in wanted:
                found[entry.name] = (sid, entry)
                wanted.discard(entry.name)
    return found


async def snapshot_table(
    repo: Repository, cluster: Cluster, table: TableName, *, parent: TableEntry | None = None,
    progress: Progress = NullProgress(), options: SnapshotOptions = SnapshotOptions(),
    reads: RateLimiter | None = None,
) -> tuple[TableEntry, int]:
    """Copy one table; return its manifest entry and the stored bytes it uploaded. With a
    ``parent`` (the table in an earlier snapshot) only what changed is stored, unless the
    chain is too deep or the deltas too big (then the table is copied in full).

    A lost connection (the server it reads from died) starts the table again
    (drtool.util.retry): a new feed and a new read, through whichever server answers; what
    was already stored is not uploaded again. Then ClusterUnreachable."""
    return await again_after_lost_connection(
        lambda: _snapshot_table_once(repo, cluster, table, parent=parent, progress=progress,
                                       options=options, reads=reads),
        lambda text: progress.note(str(table), text))


async def _snapshot_table_once(
    repo: Repository, cluster: Cluster, table: TableName, *, parent: TableEntry | None,
    progress: Progress, options: SnapshotOptions, reads: RateLimiter | None,
) -> tuple[TableEntry, int]:
    task = str(table)
    chunker = Chunker(repo.boundary_hash, options.chunks)
    estimate = await cluster.doc_count_estimate(table)
    progress.start(task, estimate)
    bytes_new = 0
    try:
        for attempt in range(options.max_rereads + 1):
            pending = PendingChanges()
            writers: list[SegmentWriter] = []
            collector = FeedCollector(cluster, table, pending)
            try:
                await collector.wait_ready()
                started = utcnow()
                meta = await cluster.table_meta(table)
                if is_drtool_fence(meta.write_hook):
                    meta = replace(meta, write_hook=(options.fenced_hooks or {}).get(str(table)))
                why_full = parent and needs_full(parent, meta, max_layers=options.max_layers,
                                                 max_delta_ratio=options.max_delta_ratio)
                if parent is not None and not why_full:
                    result = await incremental_table(
                        repo, cluster, table, parent, collector, pending, meta, chunker,
                        started=started, batch_size=options.batch_size, settle=options.settle,
                        progress=progress, task=task, reads=reads,
                    )
                    if result is None:
                        progress.note(task, "changefeed overflowed: reading the table again")
                        continue
                    entry, uploaded = result
                    return replace(entry, rescans=attempt), bytes_new + uploaded
                if why_full:
                    progress.note(task, f"copied in full: {why_full}")
                parts = await table_parts(cluster, table, parts=options.scan_parts,
                                          docs_per_part=options.docs_per_part, estimate=estimate)
                bounds = [None] + [upto for _, upto in parts]
                routed = RangedChanges(bounds, pending)
                collector.pending = routed  # from now on each change goes to its part
                writers = [SegmentWriter(repo, chunker, pending=part, progress=progress,
                                         task=task, in_flight=options.in_flight)
                           for part in routed.parts]
                segments = await _scan_parts(cluster, table, bounds, writers, collector,
                                             options, reads)
            finally:
                for writer in writers:
                    await writer.abort()
                    bytes_new += writer.bytes_new
                await collector.close()
            if segments is None:
                progress.note(task, "changefeed overflowed during the scan: reading the table again")
                continue
            if routed.late:
                segments, extra = await _reread_ranges(
                    repo, cluster, table, chunker, segments, routed.late, options, reads
                )
                bytes_new += extra
            entry = TableEntry.full_copy(meta, segments, started=started, finished=utcnow(),
                                         rescans=attempt)
            return entry, bytes_new
        raise ClusterError(
            f"changefeed on {table} overflowed {options.max_rereads + 1} times during the scan; "
            "snapshot from the standby or raise the server's changefeed_queue_size"
        )
    finally:
        progress.finish(task)


async def _scan_parts(
    cluster: Cluster, table: TableName, bounds: list[KeyText | None],
    writers: list[SegmentWriter], collector: FeedCollector, options: SnapshotOptions,
    reads: RateLimiter | None,
) -> list[SegmentRef] | None:
    """Scan the parts ``(bounds[i], bounds[i+1]]`` at the same time, each into its writer;
    then drain the feed for ``options.settle`` seconds after the last scan ended. Returns
    every segment in key order, or None when the feed overflowed."""
    loop = asyncio.get_running_loop()
    scans_ended = [loop.time()]

    async def part(i: int) -> list[SegmentRef] | None:
        scan = resumable_scan(cluster, table, after=bounds[i], upto=bounds[i + 1],
                              batch_size=options.scan_batch_size, reads=reads, texts=True)
        async with aclosing(scan):
            async for batch in scan:
                collector.check()
                if collector.overflows:
                    return None
                await writers[i].add_texts(batch.keys, batch.docs)
        scans_ended.append(loop.time())
        return await writers[i].finish(bounds[i + 1])

    results = await gather_bounded([lambda i=i: part(i) for i in range(len(writers))],
                                   len(writers))
    if collector.overflows or any(r is None for r in results):
        return None
    # Sealing the last segments overlapped the settle, which counts from the end of the scans.
    await asyncio.sleep(max(0.0, options.settle - (loop.time() - max(scans_ended))))
    collector.check()
    return None if collector.overflows else [ref for refs in results for ref in refs]


async def _reread_ranges(
    repo: Repository, cluster: Cluster, table: TableName, chunker: Chunker,
    segments: list[SegmentRef], late: set[KeyText], options: SnapshotOptions,
    reads: RateLimiter | None,
) -> tuple[list[SegmentRef], int]:
    """Replace the segments whose ranges received late changes by a fresh read of the range."""
    bounds = [key_order(s.upto) for s in segments[:-1]]  # the last segment is open-ended
    affected = sorted({bisect.bisect_left(bounds, key_order(k)) for k in late})
    result: list[SegmentRef] = []
    bytes_new = 0
    previous = 0
    for index in affected:
        result.extend(segments[previous:index])
        after = segments[index - 1].upto if index else None
        writer = SegmentWriter(repo, chunker)
        scan = resumable_scan(cluster, table, after=after, upto=segments[index].upto,
                              batch_size=options.scan_batch_size, reads=reads, texts=True)
        async with aclosing(scan):
            async for batch in scan:
                await writer.add_texts(batch.keys, batch.docs)
        result.extend(await writer.finish(segments[index].upto))
        bytes_new += writer.bytes_new
        previous = index + 1
    result.extend(segments[previous:])
    return result, bytes_new
