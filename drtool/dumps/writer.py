"""Writing archives in the layout of ``rethinkdb dump`` (see dumps.archive for the format),
for ``rethinkdb restore`` and ``drtool import-dump`` to read."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from typing import IO

from drtool.model import TableMeta

def dump_top(time_iso: str) -> str:
    """The archive's top directory for a snapshot time, as rethinkdb dump names it."""
    return "rethinkdb_dump_" + time_iso[:19]


def info_json(meta: TableMeta, doc_count: int) -> bytes:
    """The ``.info`` rethinkdb restore reads (primary key, index blobs, write hook), plus one
    ``doc_count_estimates`` entry per shard so that ``import-dump`` reads the count back."""
    def blob(data: bytes) -> dict:
        return {"$reql_type$": "BINARY", "data": base64.b64encode(data).decode()}

    per_shard = [doc_count // meta.shards + (i < doc_count % meta.shards)
                 for i in range(meta.shards)]
    info = {
        "db": {"name": meta.name.db, "type": "DB"}, "name": meta.name.table,
        "type": "TABLE", "primary_key": meta.primary_key, "doc_count_estimates": per_shard,
        "indexes": [{"index": i.name, "function": blob(i.blob)} for i in meta.indexes],
        "write_hook": None if meta.write_hook is None else {"function": blob(meta.write_hook)},
    }
    return (json.dumps(info) + "\n").encode()


class DumpWriter:
    """Writes a rethinkdb dump archive into an open binary file, one table at a time.

    A table's documents are spooled to ``spool`` (a temporary file: tar needs each member's size
    before its data), so memory stays bounded. Not thread-safe; ``close`` finishes the archive."""

    def __init__(self, out: IO[bytes], top: str, mtime: float | None = None) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|gz")
        self._top = top
        self._mtime = time.time() if mtime is None else mtime

    def _add(self, name: str, size: int, data: IO[bytes]) -> None:
        info = tarfile.TarInfo(f"{self._top}/{name}")
        info.size, info.mtime, info.mode = size, self._mtime, 0o644
        self._tar.addfile(info, data)

    def add_table(self, meta: TableMeta, doc_count: int, spool: IO[bytes]) -> None:
        """Add ``db/table.info`` and ``db/table.json`` (``spool`` holds the JSON, from
        ``JsonArraySpool``, positioned anywhere)."""
        info = info_json(meta, doc_count)
        self._add(f"{meta.name.db}/{meta.name.table}.info", len(info), io.BytesIO(info))
        size = spool.seek(0, io.SEEK_END)
        spool.seek(0)
        self._add(f"{meta.name.db}/{meta.name.table}.json", size, spool)

    def close(self) -> None:
        self._tar.close()


class JsonArraySpool:
    """Accumulates document texts as the JSON array rethinkdb dump writes, in a binary file."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0
        out.write(b"[")

    def add(self, texts: list[str]) -> None:
        if not texts:
            return
        sep = b"\n" if self.count == 0 else b",\n"
        self.out.write(sep + b",\n".join(t.encode() for t in texts))
        self.count += len(texts)

    def close(self) -> None:
        self.out.write(b"\n]\n")
