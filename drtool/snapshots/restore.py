"""Restoring snapshot tables into a cluster.

Per table: create the database and table if missing (recorded primary key; shard and replica
counts as recorded unless overridden), load the documents segment by segment (each segment is
authenticated before any of its documents is written), then build the secondary indexes and
the write hook from their blobs, wait for the indexes, and compare the server-side digest of
every recorded key range with the snapshot's.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from drtool.cluster.base import Cluster, ConflictMode
from drtool.util.progress import NullProgress, Progress
from drtool.util.retry import again_after_lost_connection
from drtool.snapshots.layers import final_texts
from drtool.compare.shape import apply_shape, create_table_like, plan_shape
from drtool.reql.digest import fold_digests
from drtool.errors import (
    ClusterError,
    ConflictError,
    EncryptionKeyError,
    IntegrityError,
    NotFound,
    SchemaMismatch,
    UsageError,
)
from drtool.repo.manifest import Manifest, TableEntry
from drtool.model import DocText, TableMeta, TableName, WriteResult
from drtool.repo.repository import Repository

DUPLICATE_KEY = "Duplicate primary key"


@dataclass(frozen=True)
class RestoreOptions:
    tables: tuple[TableName, ...] = ()  # empty: every table of the snapshot
    renames: tuple[tuple[TableName, TableName], ...] = ()
    conflict: ConflictMode | None = None  # None: the target table must be empty
    shards: int | None = None
    replicas: int | None = None
    batch_size: int = 1000
    batches_in_flight: int = 4


@dataclass
class TableRestore:
    source: TableName
    target: TableName
    created: bool = False
    documents: int = 0  # documents in the snapshot table
    written: WriteResult = field(default_factory=WriteResult)
    conflicts: int = 0
    indexes_created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    had_documents: bool = False
    digest_expected: str = ""
    digest_found: str = ""
    ranges_differing: int = 0

    @property
    def digest_ok(self) -> bool:
        return self.digest_expected == self.digest_found


def parse_renames(pairs: list[str]) -> tuple[tuple[TableName, TableName], ...]:
    """``db.t=db2.t2`` pairs -> (source, target) names; UsageError on anything else."""
    out = []
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep:
            raise UsageError(f"--rename: expected db.table=db2.table2, got {pair!r}")
        out.append((TableName.parse(src, what="--rename source"),
                    TableName.parse(dst, what="--rename target")))
    return tuple(out)


def plan_tables(manifest: Manifest, options: RestoreOptions) -> list[tuple[TableEntry, TableName]]:
    """Which snapshot tables go where. Raises NotFound for names not in the snapshot."""
    renames = dict(options.renames)
    for name in list(options.tables) + list(renames):
        if manifest.table(name) is None:
            raise NotFound(f"table {name} is not in snapshot {manifest.id}")
    chosen = [t for t in manifest.tables if not options.tables or t.name in options.tables]
    targets = [renames.get(t.name, t.name) for t in chosen]
    if len(set(targets)) != len(targets):
        raise UsageError("--rename: two tables would be restored into the same target table")
    return list(zip(chosen, targets))


async def restore_snapshot(
    repo: Repository, cluster: Cluster, manifest: Manifest, options: RestoreOptions, *,
    progress: Progress = NullProgress(),
) -> list[TableRestore]:
    """Restore the chosen tables one after another; return one report per table. Holds a
    shared repository lock, so a concurrent prune cannot remove objects being read."""
    plan = plan_tables(manifest, options)
    if not repo.can_read_data:
        raise EncryptionKeyError(
            "restore needs a key that can decrypt document data: set encryption.identity_file "
            "or encryption.passphrase_env in the policy (recipients and writer keys cannot read)"
        )
    async with repo.lock("shared", "restore"):  # prune cannot delete what is being read
        return [
            await restore_table(repo, cluster, entry, target, options, progress=progress)
            for entry, target in plan
        ]


async def restore_table(
    repo: Repository, cluster: Cluster, entry: TableEntry, target: TableName,
    options: RestoreOptions, *, progress: Progress = NullProgress(), state=None,
) -> TableRestore:
    """Restore ``entry`` into ``target``. ``state`` (a ``changelog.state.StateAt`` over
    ``entry`` as its base): restore the documents it yields instead, and check the digests
    of the state it describes once they are written.

    A lost connection (drtool.util.retry) restores the table again from the start when that
    is safe: into a table this restore created (then with ``conflict="replace"``: the
    documents already there are its own), or with ``--conflict replace|skip``. With
    ``conflict="error"`` into a table that existed, ClusterUnreachable."""
    task = str(target)
    progress.start(task, entry.doc_count)
    created = False  # by an earlier attempt

    async def once() -> TableRestore:
        nonlocal created
        report = TableRestore(entry.name, target, documents=entry.doc_count,
                              digest_expected=entry.digest, created=created)
        again = replace(options, conflict="replace") if created else options
        existing = await _prepare_table(cluster, entry.meta, target, again, report)
        created = report.created
        if report.created:
            existing, report.had_documents = None, False
        await _load(cluster, entry, (final_texts(repo, entry) if state is None else state.texts()),
                    target, again.conflict or "error", again, report, progress, task)
        current = entry
        if state is not None:
            current = state.entry()
            report.documents, report.digest_expected = current.doc_count, current.digest
        await cluster.sync(target)
        await _build_indexes_and_hook(cluster, current.meta, existing, target, report)
        await _check_digest(cluster, current, target, report)
        return report

    try:
        return await again_after_lost_connection(
            once, lambda text: progress.note(task, text),
            repeatable=lambda: created or options.conflict in ("replace", "skip"))
    finally:
        progress.finish(task)


async def _prepare_table(
    cluster: Cluster, meta: TableMeta, target: TableName, options: RestoreOptions,
    report: TableRestore,
) -> TableMeta | None:
    try:
        existing = await cluster.table_meta(target)
    except NotFound:
        try:
            await create_table_like(cluster, meta, target, shards=options.shards,
                                    replicas=options.replicas)
        except ClusterError as err:
            raise ClusterError(
                f"cannot create {target} with {options.shards or meta.shards} shards and "
                f"{options.replicas or meta.replicas} replicas as recorded: {err}; for a "
                "smaller cluster pass --shards N --replicas N"
            ) from None
        report.created = True
        return None
    if existing.primary_key != meta.primary_key:
        raise SchemaMismatch(
            f"table {target} has primary key {existing.primary_key!r} but {meta.name} in the "
            f"snapshot has {meta.primary_key!r}: restore into another table with --rename"
        )
    async with aclosing(cluster.scan(target, batch_size=1)) as first:
        async for rows in first:  # close the cursor after the first row, not at GC
            report.had_documents = bool(rows)
            break
    if report.had_documents and options.conflict is None:
        raise UsageError(
            f"table {target} already has documents: pass --conflict error|replace|skip to "
            "restore into it, or --rename to restore into a new table"
        )
    return existing


async def _load(
    cluster: Cluster, entry: TableEntry, texts_of, target: TableName, conflict: ConflictMode,
    options: RestoreOptions, report: TableRestore, progress: Progress, task: str,
) -> None:
    slots = asyncio.Semaphore(options.batches_in_flight)
    jobs: list[asyncio.Task] = []  # every batch stays here until its result was checked

    async def write(batch: list[DocText]) -> None:
        try:
            result = await cluster.insert_texts(
                target, batch, conflict=conflict, ignore_write_hook=True
            )
            _account(result, len(batch), conflict, report, target)
            progress.advance(task, len(batch), sum(len(t) + 1 for t in batch))
        finally:
            slots.release()

    def reap() -> None:
        """Raise the error of any finished batch; forget the finished ones."""
        for job in [j for j in jobs if j.done()]:
            jobs.remove(job)
            job.result()

    try:
        async with aclosing(texts_of) as segments:
            async for _object_id, texts in segments:
                for start in range(0, len(texts), options.batch_size):
                    await slots.acquire()
                    reap()
                    jobs.append(asyncio.create_task(
                        write(texts[start:start + options.batch_size])))
        for job in jobs:
            await job  # in order; the first failure raises
    except IntegrityError as err:
        await asyncio.gather(*jobs, return_exceptions=True)
        raise IntegrityError(
            f"restore of {entry.name} into {target} stopped: {err}; "
            f"{report.written.written} documents had been written before it"
        ) from None
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


def _account(result: WriteResult, sent: int, conflict: ConflictMode, report: TableRestore,
             target: TableName) -> None:
    report.written.add(result)
    if result.errors:
        if conflict == "error" and (result.first_error or "").startswith(DUPLICATE_KEY):
            report.conflicts += result.errors
        else:
            raise ClusterError(f"writing to {target} failed: {result.first_error}")
    if result.written + result.errors + result.skipped != sent:
        raise ClusterError(
            f"writing to {target}: the server acknowledged {result.written + result.errors} "
            f"of {sent} documents"
        )


async def _build_indexes_and_hook(
    cluster: Cluster, meta: TableMeta, existing: TableMeta | None, target: TableName,
    report: TableRestore,
) -> None:
    plan = plan_shape(meta, existing, mirror=False)
    await apply_shape(cluster, target, plan.actions)
    report.indexes_created.extend(a.name for a in plan.actions if a.kind == "create index")
    report.notes.extend(plan.notes)


async def _check_digest(cluster: Cluster, entry: TableEntry, target: TableName,
                        report: TableRestore) -> None:
    """Server-side digests of every recorded range, a few at a time."""
    bounds = [None] + [r.upto for r in entry.ranges[:-1]]
    found = [digest for _, digest in await cluster.segment_digests(
        target, list(zip(bounds, (r.upto for r in entry.ranges))))]
    report.ranges_differing = sum(f != r.digest for f, r in zip(found, entry.ranges))
    report.digest_found = fold_digests(found)
    if not report.digest_ok and report.had_documents:
        report.notes.append("the table had other documents before the restore")


def conflicts_error(reports: list[TableRestore]) -> ConflictError | None:
    """The error to exit with when ``--conflict error`` refused documents, else None."""
    refused = [(r.target, r.conflicts) for r in reports if r.conflicts]
    if not refused:
        return None
    detail = ", ".join(f"{t}: {n}" for t, n in refused)
    return ConflictError(
        f"{sum(n for _, n in refused)} documents already existed and were left unchanged "
        f"({detail}); use --conflict replace to overwrite them or --conflict skip to accept"
    )
