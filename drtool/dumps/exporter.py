"""Exporting a snapshot as an archive that ``rethinkdb restore`` reads.

The archive has the layout ``rethinkdb dump`` writes (dumps.archive, dumps.writer):
``rethinkdb_dump_<snapshot time>/<db>/<table>.info`` (primary key, index function blobs,
write hook, one ``doc_count_estimates`` entry per shard) and ``.json`` (the documents as the
server's canonical text, in key order, one per line). Streamed: each table's documents go
through a temporary spool file (tar needs a member's size before its data), never memory.

The output is written atomically and never overwrites anything: a temporary file in the
target directory, fsynced, then linked to the final name (``os.link`` fails if that name
exists, also when it appeared meanwhile), then the temporary name is removed. Any failure
removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from drtool.dumps.writer import DumpWriter, JsonArraySpool, dump_top
from drtool.snapshots.layers import final_texts
from drtool.util.progress import NullProgress, Progress
from drtool.snapshots.restore import RestoreOptions, plan_tables
from drtool.errors import EncryptionKeyError, UsageError
from drtool.repo.manifest import Manifest
from drtool.model import TableName
from drtool.repo.repository import Repository


@dataclass
class ExportReport:
    path: Path
    tables: list[tuple[TableName, int]] = field(default_factory=list)  # (table, documents)
    bytes_json: int = 0  # uncompressed JSON written
    size: int = 0  # bytes of the archive


def check_target(out: Path) -> None:
    """Refuse an existing output or a missing directory before any work (UsageError)."""
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out} already exists: export-dump never overwrites; choose another --out")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such directory for --out")


async def export_dump(repo: Repository, manifest: Manifest, out: Path, *,
                      tables: list[TableName] = (), progress: Progress = NullProgress()
                      ) -> ExportReport:
    """Write the snapshot's tables (all, or those named) to ``out``. Raises UsageError (``out``
    exists), NotFound (a table not in the snapshot), EncryptionKeyError, IntegrityError."""
    check_target(out)
    plan = plan_tables(manifest, RestoreOptions(tables=tuple(tables)))
    if not repo.can_read_data:
        raise EncryptionKeyError(
            "export-dump needs a key that can decrypt document data: set "
            "encryption.identity_file or encryption.passphrase_env in the policy")
    report = ExportReport(out)
    mtime = datetime.fromisoformat(manifest.time.replace("Z", "+00:00")).timestamp()
    fd, temp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        async with repo.lock("shared", "export-dump"):
            with os.fdopen(fd, "wb") as archive:
                writer = DumpWriter(archive, dump_top(manifest.time), mtime)
                for entry, _ in plan:
                    task = str(entry.name)
                    progress.start(task, entry.doc_count)
                    try:
                        with tempfile.TemporaryFile(dir=out.parent) as spool_file:
                            spool = JsonArraySpool(spool_file)
                            async with aclosing(final_texts(repo, entry)) as batches:
                                async for _, texts in batches:
                                    spool.add(texts)
                                    progress.advance(task, len(texts), sum(map(len, texts)))
                            spool.close()
                            report.bytes_json += spool_file.tell()
                            writer.add_table(entry.meta, spool.count, spool_file)
                        report.tables.append((entry.name, spool.count))
                    finally:
                        progress.finish(task)
                writer.close()
                archive.flush()
                os.fsync(archive.fileno())
        try:
            os.link(temp, out)
        except FileExistsError:
            raise UsageError(f"{out} appeared while the archive was written: not overwritten; "
                             "choose another --out") from None
        _fsync_dir(out.parent)
        report.size = out.stat().st_size
        return report
    finally:
        os.unlink(temp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
