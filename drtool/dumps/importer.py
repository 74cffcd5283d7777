"""Importing a ``rethinkdb dump`` archive as a snapshot.

Each table of the archive is stored exactly as a full snapshot of the same table would store
it: the documents as the server's canonical text (``drtool.reql.canonical``, see
dumps.archive), in key order, cut by the same chunker into the same segments with the same
index objects (``SegmentWriter``), the same manifest entry (``TableEntry.full_copy``). So
restore, ``verify --read-data`` and ``diff --against`` work on it, and a later snapshot of the
live table builds on it (or, copied in full, finds every segment already stored).

The archive is read twice, streamed (dumps.archive): first its ``.info`` files and a check
that it is complete, then the documents; no table is held in memory. With ``via`` (``--via
primary|standby``) the documents are not canonicalised and ordered on the client but by a
cluster, through scratch tables (``ScratchTables``): for archives not in key order. The manifest is written
last, so a bad or truncated archive leaves no snapshot (segments already stored are
unreferenced: ``prune`` removes them). The manifest records the archive under
``extra["imported"]`` (``archive``: its file name, ``dump``: its top directory, ``time``: the
dump's time from the archive's member times, ``via``: the cluster that canonicalised it, or
null); each table's ``started``/``finished`` is that
time too.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

from drtool.cluster.base import Cluster, Row
from drtool.dumps.archive import ArchiveError, DumpCatalog, DumpTable, read_catalog, rows
from drtool.cluster.scanning import resumable_scan
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.segments import Chunker, SegmentWriter
from drtool.snapshots.snapshot import SnapshotOptions
from drtool.errors import NotFound
from drtool.repo.manifest import Manifest, TableEntry
from drtool.model import TableName, utcnow
from drtool.repo.objects import new_snapshot_id
from drtool.repo.repository import Repository
from drtool.util.workers import run_cpu

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
    via: Cluster | None = None, progress: Progress = NullProgress(),
) -> Manifest:
    """Store the archive's tables (all, or those named) as a new snapshot; return its manifest.

    ``via``: canonicalise and order the documents through this cluster (``ScratchTables``)
    instead of on the client; the archive need not be in key order then.

    Raises ArchiveError (bad, truncated or incomplete archive: nothing is recorded), NotFound
    (a named table is not in the archive), ClusterError (``via`` refused a document or the
    scratch table), and what storing raises."""
    catalog = await run_cpu(read_catalog, archive)
    for name in tables:
        if catalog.table(name) is None:
            raise NotFound(f"{archive}: table {name} is not in the archive (it has "
                           f"{', '.join(str(t.name) for t in catalog.tables)})")
    wanted = set(tables) or {t.name for t in catalog.tables}
    async with repo.lock("shared", "import-dump"):
        if via is None:
            entries, bytes_new = await _store_tables(repo, catalog, wanted, progress)
        else:
            async with ScratchTables(via) as scratch:
                entries, bytes_new = await _store_tables(repo, catalog, wanted, progress, scratch)
        existing = await repo.list_snapshots()
        manifest = Manifest(
            id=new_snapshot_id(after=existing[-1] if existing else None),
            time=utcnow(), policy=policy_name,
            source=f"rethinkdb dump archive {archive.name}",
            tables=tuple(sorted(entries, key=lambda e: e.name)), bytes_new=bytes_new,
            extra={"imported": {"archive": archive.name, "dump": catalog.top,
                                "time": catalog.time,
                                "via": None if via is None else via.description}},
        )
        await repo.put_manifest(manifest)
        return manifest


async def _store_tables(repo: Repository, catalog: DumpCatalog, wanted: set[TableName],
                        progress: Progress, scratch: "ScratchTables | None" = None,
                        ) -> tuple[list[TableEntry], int]:
    chunker = Chunker(repo.boundary_hash, SnapshotOptions().chunks)  # a snapshot's chunking
    entries: list[TableEntry] = []
    bytes_new = 0
    tables = rows(catalog, ordered=scratch is None)
    try:
        while (item := await _next(tables)) is not _END:
            table, batches = item  # type: ignore[misc]
            if table.name not in wanted:
                continue
            task = str(table.name)
            progress.start(task, None)
            writer = SegmentWriter(repo, chunker, progress=progress, task=task)
            try:
                if scratch is None:
                    while (batch := await _next(batches)) is not _END:
                        await writer.add(batch)  # type: ignore[arg-type]
                else:
                    await scratch.canonicalise(table, batches, writer,
                                               f"{catalog.path}: {table.data_member}")
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


class ScratchTables:
    """``--via``: each table's documents go through a scratch table of a cluster, in a
    database of its own (``drtool_import_<random>``), created here and dropped on exit, also
    after an error: inserted with ``insert(r.json(...))`` in batches, then read back in key
    order as the server's ``to_json_string()``. Only that database is ever written."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.db = f"drtool_import_{secrets.token_hex(6)}"
        self._count = 0

    async def __aenter__(self) -> "ScratchTables":
        await self.cluster.ensure_db(self.db)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.shield(self.cluster.drop_db(self.db))

    async def canonicalise(self, table: DumpTable, batches: Iterator[list[Row]],
                           writer: SegmentWriter, where: str) -> None:
        """Load the archive's batches into a new scratch table, then stream it into
        ``writer`` in key order; the scratch table is dropped afterwards."""
        self._count += 1
        scratch = TableName(self.db, f"t{self._count}")
        await self.cluster.create_table(scratch, primary_key=table.meta.primary_key, shards=1,
                                        replicas=1, durability="soft", write_acks="single")
        try:
            while (batch := await _next(batches)) is not _END:
                texts = [text for _, text in batch]  # type: ignore[union-attr]
                result = await self.cluster.insert_texts(scratch, texts)
                if result.errors or result.written != len(texts):
                    raise ArchiveError(f"{where}: {self.cluster.description} refused a "
                                       f"document: {result.first_error or 'not written'}")
            await self.cluster.sync(scratch)
            scan = resumable_scan(self.cluster, scratch)
            async with aclosing(scan):
                async for rows_ in scan:
                    await writer.add(rows_)
        finally:
            await asyncio.shield(self.cluster.drop_table(scratch))
