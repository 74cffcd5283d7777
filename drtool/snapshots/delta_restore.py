"""Delta restore: make an existing table equal to a snapshot by writing only what differs.

Per table (the pgBackRest "delta restore" for a document database):

1. the server computes the segment digest (docs/FORMAT.md) of every range the snapshot
   recorded (``TableEntry.ranges``, ``Cluster.segment_digests``); a range whose count and
   digest equal the recorded ones is done:
   nothing of it is read or written;
2. each differing range's documents are taken from the snapshot (``layers.range_rows``: only
   the objects of that range are decrypted) and compared with the live range by the diff
   search of ``diff`` (compare.diff_ranges.find_differences): both sides fold the same key
   chunks, the snapshot's side client-side from its texts (``SnapshotRanges``), the live side
   on the server, narrowing down to per-document hashes, so only digests and a few keys cross
   the network, not every key of a changed range;
3. documents the live table lacks or holds differently are written from the snapshot
   (``conflict="replace"``, write hook bypassed as in restore), documents the snapshot lacks
   are deleted;
4. missing indexes and the write hook are added as restore does; finally the digest of every
   recorded range is computed again and compared (``ranges_differing``).

Idempotent: a delta restore that stopped part-way (the target stopped answering, the process
was killed) leaves every document either as it was or as in the snapshot; running it again
finishes it. An error raised after the first write says so (``rerun_hint``).

Changed ranges are processed in groups of about ``batch_bytes`` of snapshot text, two groups
at a time, so memory is bounded by that, not by the table. ``dry_run`` stops after step 2 and reports what would change. The
live table must exist with the snapshot's primary key. Writes landing on it meanwhile are not
coordinated with: the final check shows them.
"""

from __future__ import annotations

import bisect
from functools import partial
from collections.abc import Sequence
from dataclasses import dataclass, field

from drtool.cluster.base import ChunkDigest, Cluster, KeyRange, Row, Window, fold_chunks
from drtool.compare.diff_ranges import Differences, SearchParams, Side, Traffic, find_differences
from drtool.snapshots.diff_snapshot import recorded_ranges
from drtool.snapshots.layers import range_rows
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.restore import RestoreOptions, plan_tables
from drtool.compare.shape import apply_shape, plan_shape
from drtool.util.retry import again_after_lost_connection
from drtool.util.tasks import gather_bounded
from drtool.errors import (
    ClusterError, DrtoolError, EncryptionKeyError, NotFound, SchemaMismatch, UsageError,
)
from drtool.repo.manifest import Manifest, TableEntry
from drtool.model import KeyText, TableName, WriteResult
from drtool.reql.ordering import key_order
from drtool.repo.repository import Repository


@dataclass(frozen=True)
class DeltaOptions:
    dry_run: bool = False
    batch_size: int = 1000  # documents per write
    batch_bytes: int = 8 << 20  # snapshot plaintext of one group of ranges (bounds memory)
    groups_in_flight: int = 2  # groups compared at once (the server works while we do)
    search: SearchParams = SearchParams()


@dataclass
class DeltaReport:
    source: TableName
    target: TableName
    documents: int  # in the snapshot table
    ranges: int  # recorded ranges
    ranges_changed: int = 0  # ranges whose live digest differed before the restore
    written: list[KeyText] = field(default_factory=list)  # missing or changed on the table
    deleted: list[KeyText] = field(default_factory=list)  # not in the snapshot
    bytes_written: int = 0  # bytes of document text sent
    shape: list[str] = field(default_factory=list)  # index/hook actions (planned or done)
    notes: list[str] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)  # every digest query on the table
    ranges_differing: int = 0  # after the restore (0 = equal to the snapshot)
    dry_run: bool = False
    writes_sent: bool = False  # a write went out: a failure now may leave the table half-done

    @property
    def digest_ok(self) -> bool:
        return self.ranges_differing == 0

    def to_json(self) -> dict:
        return {
            "source": str(self.source), "target": str(self.target), "dry_run": self.dry_run,
            "documents": self.documents, "ranges": self.ranges,
            "ranges_changed": self.ranges_changed, "written_count": len(self.written),
            "deleted_count": len(self.deleted), "bytes_written": self.bytes_written,
            "written": self.written, "deleted": self.deleted, "schema": self.shape,
            "traffic": self.traffic.to_json(), "digest_ok": None if self.dry_run else self.digest_ok,
            "ranges_differing": self.ranges_differing, "notes": self.notes,
        }


class SnapshotRanges:
    """Snapshot documents of some key ranges, answering ``chunk_digests`` as the server would
    (``fold_chunks`` on the texts): the snapshot's side of ``find_differences``. Only
    ``chunk_digests`` is provided: that is all ``Side`` asks of a cluster."""

    def __init__(self, ranges: list[tuple[KeyRange, list[Row]]]) -> None:
        """``ranges``: disjoint key ranges in key order, each with its rows (in key order)."""
        self.rows: list[Row] = []
        self._at: dict[KeyText, int] = {}  # key -> index just before it
        bounds: dict[KeyText, int] = {}  # a range's bounds -> index at that bound
        for (after, upto), rows in ranges:
            if after is not None:
                bounds[after] = len(self.rows) - 1
            self._at.update((key, len(self.rows) + n) for n, (key, _) in enumerate(rows))
            self.rows.extend(rows)
            if upto is not None:
                bounds[upto] = len(self.rows) - 1
        for key, n in bounds.items():
            self._at.setdefault(key, n)
        self._orders: list[bytes] | None = None  # only for a bound that is neither key nor bound

    def _end_of(self, key: KeyText | None, default: int) -> int:
        """Index just after ``key`` (every row <= key before it); ``default`` for None."""
        if key is None:
            return default
        n = self._at.get(key)
        if n is not None:
            return n + 1
        if self._orders is None:
            self._orders = [key_order(k) for k, _ in self.rows]
        return bisect.bisect_right(self._orders, key_order(key))

    def _index_after(self, after: KeyText | None) -> int:
        return self._end_of(after, 0)

    def _index_upto(self, upto: KeyText | None) -> int:
        return self._end_of(upto, len(self.rows))

    async def chunk_digests(self, table: TableName, ranges: Sequence[KeyRange], *,
                            threshold: str, windows: Sequence[Window] | None = None,
                            keys: bool = True, digest_chars: int = 36) -> list[list[ChunkDigest]]:
        out = []
        for n, (after, upto) in enumerate(ranges):
            start = self._index_after(after)
            if windows is None:
                part = self.rows[start:self._index_upto(upto)]
            else:
                skip, limit = windows[n]
                part = self.rows[start + skip:start + skip + limit]
            out.append(fold_chunks(part, upto, threshold, keys, digest_chars))
        return out


async def delta_restore(
    repo: Repository, cluster: Cluster, manifest: Manifest, options: RestoreOptions,
    delta: DeltaOptions = DeltaOptions(), *, progress: Progress = NullProgress(),
) -> list[DeltaReport]:
    """Delta-restore the chosen tables (``options.tables``/``renames``; its conflict and shard
    settings do not apply). Raises NotFound (a target table missing), SchemaMismatch (another
    primary key), EncryptionKeyError, ClusterError (a write refused), ClusterUnreachable; an
    error after the first write into a table ends with ``rerun_hint`` for it."""
    plan = plan_tables(manifest, options)
    if not repo.can_read_data:
        raise EncryptionKeyError(
            "restore --delta needs a key that can decrypt document data: set "
            "encryption.identity_file or encryption.passphrase_env in the policy")
    async with repo.lock("shared", "restore"):
        return [await delta_table(repo, cluster, entry, target, delta, progress=progress,
                                  snapshot_id=manifest.id)
                for entry, target in plan]


def rerun_hint(snapshot_id: str, targets: Sequence[TableName]) -> str:
    """What to do after a delta restore into ``targets`` stopped part-way: run it again."""
    names = ", ".join(str(t) for t in targets)
    return (f"{'table' if len(targets) == 1 else 'tables'} {names} may be partly restored from "
            f"snapshot {snapshot_id}: run the same restore {snapshot_id} --delta again to finish "
            "(it is idempotent: it writes only what still differs)")


async def delta_table(repo: Repository, cluster: Cluster, entry: TableEntry, target: TableName,
                      options: DeltaOptions, *, snapshot_id: str,
                      progress: Progress = NullProgress(), rows_of=None) -> DeltaReport:
    """``rows_of(i)`` (default: the snapshot's ``range_rows``): the documents ``entry`` holds
    in recorded range ``i``; a restore to a time passes its state's (``entry`` then carries
    that state's ranges over its base's layers). A lost connection compares and repairs the
    table again (drtool.util.retry: it writes only what still differs). An error after any
    attempt wrote into the table ends with ``rerun_hint``."""
    wrote = [False]  # did any attempt send a write?
    try:
        return await again_after_lost_connection(
            lambda: _delta_table_once(repo, cluster, entry, target, options,
                                        progress=progress, rows_of=rows_of, wrote=wrote),
            lambda text: progress.note(f"delta {target}", text))
    except DrtoolError as err:
        if wrote[0]:  # the table may be half-way: say how to finish
            err.args = (f"{err}; {rerun_hint(snapshot_id, [target])}",)
        raise


async def _delta_table_once(repo: Repository, cluster: Cluster, entry: TableEntry,
                            target: TableName, options: DeltaOptions, *, progress: Progress,
                            rows_of, wrote: list[bool]) -> DeltaReport:
    rows_of = rows_of or partial(range_rows, repo, entry)
    try:
        live_meta = await cluster.table_meta(target)
    except NotFound:
        raise NotFound(f"table {target} does not exist on {cluster.description}: restore "
                       "--delta repairs an existing table; restore without --delta creates it"
                       ) from None
    if live_meta.primary_key != entry.meta.primary_key:
        raise SchemaMismatch(
            f"table {target} has primary key {live_meta.primary_key!r} but {entry.name} in the "
            f"snapshot has {entry.meta.primary_key!r}: restore into another table with --rename")
    if [seg.upto for seg in entry.layers[0].segments] != [r.upto for r in entry.ranges]:
        raise UsageError(
            f"table {entry.name} of this snapshot was made by an older drtool (its ranges do "
            "not follow its segments): restore --delta cannot use it; restore with --conflict "
            "replace instead")
    report = DeltaReport(entry.name, target, entry.doc_count, len(entry.ranges),
                         dry_run=options.dry_run)
    task = f"delta {target}"
    progress.start(task, entry.doc_count)
    try:
        live = Side(cluster, target, options.search)
        ranges = recorded_ranges(entry)
        before = await live.segment_digests(ranges)
        changed = [i for i, (live_range, r) in enumerate(zip(before, entry.ranges))
                   if live_range != (r.count, r.digest)]
        report.ranges_changed = len(changed)
        progress.advance(task, entry.doc_count - sum(entry.ranges[i].count for i in changed), 0)

        async def repair(group: list[int]) -> None:
            # The search compares chunk folds computed alike on both sides (the recorded
            # range digests are segment digests, another function: FORMAT.md §6.2).
            snap = SnapshotRanges([(ranges[i], await rows_of(i)) for i in group])
            found = await find_differences(Side(snap, target, options.search), live,  # type: ignore[arg-type]
                                           [ranges[i] for i in group], options.search)
            await _apply(cluster, target, snap, found, options, report)
            progress.advance(task, sum(entry.ranges[i].count for i in group), 0)

        await gather_bounded([partial(repair, g) for g in _groups(entry, changed, options.batch_bytes)],
                             options.groups_in_flight)
        report.written.sort(key=key_order)
        report.deleted.sort(key=key_order)
        plan = plan_shape(entry.meta, live_meta, mirror=False)
        report.shape = [str(a) for a in plan.actions]
        report.notes.extend(plan.notes)
        if not options.dry_run:
            await cluster.sync(target)
            report.writes_sent = report.writes_sent or bool(plan.actions)
            await apply_shape(cluster, target, plan.actions)
            after = await live.segment_digests(ranges)
            report.ranges_differing = sum(live_range != (r.count, r.digest)
                                          for live_range, r in zip(after, entry.ranges))
        else:
            report.ranges_differing = report.ranges_changed
        report.traffic.add(live.traffic)
        return report
    except DrtoolError:
        wrote[0] = wrote[0] or report.writes_sent
        raise
    finally:
        progress.finish(task)


def _groups(entry: TableEntry, indexes: list[int], limit: int) -> list[list[int]]:
    """Consecutive changed ranges grouped to about ``limit`` bytes of snapshot text each."""
    base = entry.layers[0].segments
    groups: list[list[int]] = []
    size = limit
    for i in indexes:
        if size >= limit:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += base[i].plain_size
    return groups


async def _apply(cluster: Cluster, target: TableName, snap: SnapshotRanges, found: Differences,
                 options: DeltaOptions, report: DeltaReport) -> None:
    """Write the snapshot's version of missing/changed keys; delete the extra ones."""
    wanted = sorted(found.missing + found.changed, key=key_order)
    report.written.extend(wanted)
    report.deleted.extend(found.extra)
    texts = dict(snap.rows)
    docs = [texts[k] for k in wanted]
    report.bytes_written += sum(len(d.encode()) for d in docs)
    if options.dry_run:
        return
    report.writes_sent = report.writes_sent or bool(docs or found.extra)
    for start in range(0, len(docs), options.batch_size):
        batch = docs[start:start + options.batch_size]
        result = await cluster.insert_texts(target, batch, conflict="replace",
                                            ignore_write_hook=True)
        _check(result, len(batch), target)
    for start in range(0, len(found.extra), options.batch_size):
        result = await cluster.delete_keys(target, found.extra[start:start + options.batch_size],
                                           ignore_write_hook=True)
        if result.errors:
            raise ClusterError(f"deleting from {target} failed: {result.first_error}")


def _check(result: WriteResult, sent: int, target: TableName) -> None:
    if result.errors:
        raise ClusterError(f"writing to {target} failed: {result.first_error}")
    if result.written != sent:
        raise ClusterError(f"writing to {target}: the server acknowledged {result.written} of "
                           f"{sent} documents")
