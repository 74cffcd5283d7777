"""The lost-writes file of a failback: documents the old primary has that the current primary
lacks or has differently, so that no write is dropped silently.

``find_lost_writes`` compares each table of the old primary (source) with the current primary
(target) with the diff machinery (drtool.compare.diff: server-side digests, only differing keys
fetched) and writes one canonical JSON line per document, sorted by table then key::

    {"current":null,"doc":{...the old primary's document...},"key":5,"kind":"missing","table":"app.orders"}
    {"current":{...current primary's document...},"doc":{...},"key":"k7","kind":"changed","table":"app.orders"}

(keys sorted, compact, non-ASCII raw: the server's ``to_json_string()`` form; ``doc`` and
``current`` are the servers' own texts). ``kind``: "missing" (only the old primary has the key)
or "changed" (both have it, different). Documents only the current primary has are not listed:
they are writes made after the failover. The file is written atomically (temporary file, then
rename) and is only written when there is something to list.

``reapply_lost_writes`` writes the file's ``doc`` values into a cluster (``drtool failback
--reapply FILE``): ``conflict="error"`` (default) writes only keys the cluster lacks and counts
the others as conflicts, ``"replace"`` overwrites, ``"skip"`` keeps the cluster's. Documents
are written as text exactly as recorded (``ignore_write_hook``), streamed in batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from drtool.reql import canonical
from drtool.cluster.base import Cluster, ConflictMode
from drtool.compare.diff import diff_table
from drtool.errors import UsageError
from drtool.model import TableName, WriteResult
from drtool.reql.ordering import key_order

BATCH = 1000


@dataclass
class LostWrites:
    """Per table: how many documents are missing on / changed on the current primary."""

    path: Path | None = None  # None: nothing lost, no file written
    missing: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.missing.values()) + sum(self.changed.values())

    def to_json(self) -> dict:
        return {"file": None if self.path is None else str(self.path), "count": self.count,
                "missing": self.missing, "changed": self.changed}


def _line(table: TableName, key: str, doc: str, current: str | None, kind: str) -> str:
    name = json.dumps(str(table), ensure_ascii=False)
    return (f'{{"current":{current or "null"},"doc":{doc},"key":{key},"kind":"{kind}",'
            f'"table":{name}}}\n')


async def _table_lines(old: Cluster, current: Cluster, table: TableName, report: LostWrites
                       ) -> list[str]:
    diff = await diff_table(old, current, table, source_role="old primary",
                            target_role="current primary")
    if diff.source_meta is None or not diff.keys_listed:
        return []
    lines = []
    missing, changed = set(diff.missing), set(diff.changed)
    keys = sorted(missing | changed, key=key_order)
    for start in range(0, len(keys), BATCH):
        batch = keys[start:start + BATCH]
        docs = dict(await old.get_docs(table, batch))
        now = dict(await current.get_docs(table, [k for k in batch if k in changed]))
        for key in batch:
            if key not in docs:  # deleted on the old primary meanwhile
                continue
            kind = "missing" if key in missing else "changed"
            lines.append(_line(table, key, docs[key], now.get(key), kind))
            bucket = report.missing if kind == "missing" else report.changed
            bucket[str(table)] = bucket.get(str(table), 0) + 1
    return lines


async def find_lost_writes(old: Cluster, current: Cluster, tables: list[TableName],
                           path: Path) -> LostWrites:
    """Compare ``tables`` and write the lost-writes file at ``path`` (see the module doc).
    A table missing on the old primary is skipped; one missing on the current primary is
    listed whole (every document "missing")."""
    report = LostWrites()
    lines: list[str] = []
    for table in sorted(tables):
        lines.extend(await _table_lines(old, current, table, report))
    if not lines:
        return report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(lines)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    report.path = path
    return report


def read_lost_writes(path: Path) -> Iterator[tuple[TableName, str]]:
    """``(table, document text)`` per line of a lost-writes file, streamed. Raises
    UsageError naming the file and line for anything that is not such a line."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"{path}: cannot read the lost-writes file: {err.strerror or err}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = canonical.parse(line)
                table = TableName.parse(value["table"])
                doc = canonical.dumps(value["doc"])
                if not isinstance(value["doc"], dict):
                    raise ValueError("doc is not an object")
            except (ValueError, KeyError, TypeError, UsageError) as err:
                raise UsageError(f"{path}: line {number}: not a lost-writes line ({err}); "
                                 "expected the file drtool failback wrote") from None
            yield table, doc


async def reapply_lost_writes(cluster: Cluster, path: Path, *, conflict: ConflictMode = "error",
                              dry_run: bool = False) -> dict[str, WriteResult]:
    """Write every document of the file into ``cluster`` (see the module doc). Returns the
    write counts per table (in a dry run: inserted = documents that would be sent)."""
    results: dict[str, WriteResult] = {}
    pending: dict[TableName, list[str]] = {}

    async def flush(table: TableName) -> None:
        docs = pending.pop(table, [])
        result = results.setdefault(str(table), WriteResult())
        if dry_run:
            result.inserted += len(docs)
        elif docs:
            result.add(await cluster.insert_texts(table, docs, conflict=conflict,
                                                  ignore_write_hook=True))

    for table, doc in read_lost_writes(path):
        pending.setdefault(table, []).append(doc)
        if len(pending[table]) >= BATCH:
            await flush(table)
    for table in list(pending):
        await flush(table)
    return results
