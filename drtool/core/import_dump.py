"""Importing a ``rethinkdb dump`` archive as a snapshot.

Each table of the archive is stored exactly as a full snapshot of the same table would store
it: the documents as the server's canonical text (``drtool.cluster.canonical``, see
core.dump_archive), in key order, cut by the same chunker into the same segments with the same
index objects (``SegmentWriter``), the same manifest entry (``TableEntry.full_copy``). So
restore, ``verify --read-data`` and ``diff --against`` work on it, and a later snapshot of the
live table builds on it (or, copied in full, finds every segment already stored).

The archive is read twice, streamed (core.dump_archive): first its ``.info`` files and a check
that it is complete, then the documents; no table is held in memory. The manifest is written
last, so a bad or truncated archive leaves no snapshot (segments already stored are
unreferenced: ``prune`` removes them). The manifest records the archive under
``extra["imported"]`` (``archive``: its file name, ``dump``: its top directory, ``time``: the
dump's time from the archive's member times); each table's ``started``/``finished`` is that
time too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from drtool.core.dump_archive import DumpCatalog, read_catalog, rows
from drtool.core.progress import NullProgress, Progress
from drtool.core.segments import Chunker, SegmentWriter
from drtool.core.snapshot import SnapshotOptions
from drtool.errors import NotFound
from drtool.manifest import Manifest, TableEntry
from drtool.model import TableName, utcnow
from drtool.repo.objects import new_snapshot_id
from drtool.repo.repository import Repository
from drtool.workers import run_cpu

T = TypeVar("T")
_END = object()


async def _next(iterator: Iterator[T]) -> T | object:
    """The next item of a blocking iterator (decompression, parsing), off the event loop."""
    return await run_cpu(next, iterator, _END)


def imported_from(manifest: Manifest) -> dict | None:
    """What ``import_dump`` recorded about the archive, or None for a snapshot of a cluster."""
    return manifest.extra.get("imported")


async def import_dump(
    repo: Repository, archive: Path, *, policy_name: str, tables: list[TableName] = (),
    progress: Progress = NullProgress(),
) -> Manifest:
    """Store the archive's tables (all, or those named) as a new snapshot; return its manifest.

    Raises ArchiveError (bad, truncated or incomplete archive: nothing is recorded), NotFound
    (a named table is not in the archive), and what storing raises."""
    catalog = await run_cpu(read_catalog, archive)
    for name in tables:
        if catalog.table(name) is None:
            raise NotFound(f"{archive}: table {name} is not in the archive (it has "
                           f"{', '.join(str(t.name) for t in catalog.tables)})")
    wanted = set(tables) or {t.name for t in catalog.tables}
    async with repo.lock("shared", "import-dump"):
        entries, bytes_new = await _store_tables(repo, catalog, wanted, progress)
        existing = await repo.list_snapshots()
        manifest = Manifest(
            id=new_snapshot_id(after=existing[-1] if existing else None),
            time=utcnow(), policy=policy_name,
            source=f"rethinkdb dump archive {archive.name}",
            tables=tuple(sorted(entries, key=lambda e: e.name)), bytes_new=bytes_new,
            extra={"imported": {"archive": archive.name, "dump": catalog.top,
                                "time": catalog.time}},
        )
        await repo.put_manifest(manifest)
        return manifest


async def _store_tables(repo: Repository, catalog: DumpCatalog, wanted: set[TableName],
                        progress: Progress) -> tuple[list[TableEntry], int]:
    chunker = Chunker(repo.boundary_hash, SnapshotOptions().chunks)  # a snapshot's chunking
    entries: list[TableEntry] = []
    bytes_new = 0
    tables = rows(catalog)
    try:
        while (item := await _next(tables)) is not _END:
            table, batches = item  # type: ignore[misc]
            if table.name not in wanted:
                continue
            task = str(table.name)
            progress.start(task, None)
            writer = SegmentWriter(repo, chunker, progress=progress, task=task)
            try:
                while (batch := await _next(batches)) is not _END:
                    await writer.add(batch)  # type: ignore[arg-type]
                segments = await writer.finish()
            finally:
                await writer.abort()
                bytes_new += writer.bytes_new
                progress.finish(task)
            entries.append(TableEntry.full_copy(table.meta, segments, started=catalog.time,
                                                finished=catalog.time))
    finally:
        tables.close()
    return entries, bytes_new
