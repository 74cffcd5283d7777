"""Comparing tables of two clusters: schema and documents, by server-side digests.

``diff_table`` compares one table of a *source* cluster with the same table of a *target*
cluster (``drtool diff``: primary vs standby; ``reconcile`` in either direction). Schema: the
primary key, secondary indexes by name and function blob, the write hook blob, shard and
replica counts. Documents: drtool.compare.diff_ranges (only keys, counts and digests cross the
network). A table missing on one side is reported with the other side's document count; its
keys are not listed (the whole table differs).

Usable from a long-running asyncio process: every function takes connected clusters, nothing
here opens or closes them. Documents changing while a diff runs may be reported either way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from drtool.cluster.base import Cluster
from drtool.compare.diff_ranges import (
    WHOLE,
    Differences,
    SearchParams,
    Side,
    Traffic,
    find_differences,
)
from drtool.util.retry import each_again_after_lost_connection
from drtool.util.progress import NullProgress, Progress
from drtool.config.policy import select_tables
from drtool.compare.shape import ShapeRule, is_drtool_fence
from drtool.errors import NotFound
from drtool.model import KeyText, TableMeta, TableName
from drtool.config.policy import Policy



@dataclass(frozen=True)
class SchemaDifference:
    """One schema item that differs. ``item``: table, primary key, index, write hook, shards,
    replicas; ``name``: the index name; ``source``/``target``: short descriptions."""

    item: str
    name: str
    source: str
    target: str

    def describe(self, source_role: str, target_role: str) -> str:
        what = f"index {self.name}" if self.name else self.item
        return f"{what}: {self.source} on {source_role}, {self.target} on {target_role}"

    def to_json(self) -> dict:
        return {"item": self.item, "name": self.name, "source": self.source, "target": self.target}


@dataclass(frozen=True)
class DiffOptions:
    search: SearchParams = SearchParams()
    table_concurrency: int = 2
    #: the shard and replica counts the target should have (``target_shape`` of the policy)
    shape: ShapeRule = ShapeRule()


@dataclass
class TableDiff:
    """The differences of one table. Key lists are in key order; ``missing``/``extra`` are
    relative to the target (missing on it / only on it)."""

    table: TableName
    source_role: str
    target_role: str
    source_meta: TableMeta | None = None
    target_meta: TableMeta | None = None
    schema: list[SchemaDifference] = field(default_factory=list)
    source_count: int = 0
    target_count: int = 0
    missing: list[KeyText] = field(default_factory=list)
    extra: list[KeyText] = field(default_factory=list)
    changed: list[KeyText] = field(default_factory=list)
    regions: list[tuple[KeyText | None, KeyText | None]] = field(default_factory=list)
    keys_listed: bool = True  # False: counts only (table missing, keys not comparable)
    missing_count: int = 0
    extra_count: int = 0
    changed_count: int = 0
    ranges_differing: int = 0
    notes: list[str] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    seconds: float = 0.0

    @property
    def documents_equal(self) -> bool:
        return not (self.missing_count or self.extra_count or self.changed_count
                    or self.ranges_differing)

    @property
    def equal(self) -> bool:
        return not self.schema and self.documents_equal

    def set_keys(self, found: Differences) -> None:
        self.missing, self.extra, self.changed = found.missing, found.extra, found.changed
        self.regions = found.regions
        self.missing_count, self.extra_count = len(found.missing), len(found.extra)
        self.changed_count = len(found.changed)

    def to_json(self) -> dict:
        return {
            "table": str(self.table), "equal": self.equal, "source": self.source_role,
            "target": self.target_role,
            "exists": {self.source_role: self.source_meta is not None,
                       self.target_role: self.target_meta is not None},
            "documents": {self.source_role: self.source_count, self.target_role: self.target_count},
            "schema": [s.to_json() for s in self.schema],
            "missing_count": self.missing_count, "extra_count": self.extra_count,
            "changed_count": self.changed_count, "ranges_differing": self.ranges_differing,
            "keys_listed": self.keys_listed,
            "missing": self.missing, "extra": self.extra, "changed": self.changed,
            "notes": self.notes, "traffic": self.traffic.to_json(),
            "seconds": round(self.seconds, 3),
        }


def _blob(blob: bytes | None) -> str:
    return "none" if blob is None else f"{len(blob)}-byte function"


def compare_schema(source: TableMeta | None, target: TableMeta | None,
                   shape: ShapeRule = ShapeRule()) -> list[SchemaDifference]:
    """What differs in the tables' shape (never server names). A target fenced by drtool
    (its write hook is drtool's fence, drtool.compare.shape) does not differ by its hook: a
    promotion installs the source's. Shard and replica counts are compared with what
    ``shape`` expects (by default the source's)."""
    if source is None or target is None:
        if source is target:
            return []
        return [SchemaDifference("table", "", "present" if source else "missing",
                                 "present" if target else "missing")]
    out = []
    if source.primary_key != target.primary_key:
        out.append(SchemaDifference("primary key", "", repr(source.primary_key),
                                    repr(target.primary_key)))
    have = {i.name: i.blob for i in target.indexes}
    want = {i.name: i.blob for i in source.indexes}
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            out.append(SchemaDifference(
                "index", name, "missing" if name not in want else "present",
                "missing" if name not in have else
                ("present" if name not in want else "another function")))
    if source.write_hook != target.write_hook and not is_drtool_fence(target.write_hook):
        out.append(SchemaDifference("write hook", "", _blob(source.write_hook),
                                    _blob(target.write_hook) if target.write_hook is None
                                    or source.write_hook is None else "another function"))
    out.extend(SchemaDifference(item, "", shape.describe(item, source), str(getattr(target, item)))
               for item in shape_differences(source, target, shape))
    return out


def shape_differences(source: TableMeta, target: TableMeta, shape: ShapeRule) -> list[str]:
    """The counts ("shards", "replicas") in which ``target`` differs from what ``shape``
    expects of a copy of ``source``."""
    return [item for item in ("shards", "replicas")
            if shape.expected(item, source) not in (None, getattr(target, item))]


async def table_meta_or_none(cluster: Cluster, table: TableName) -> TableMeta | None:
    try:
        return await cluster.table_meta(table)
    except NotFound:
        return None


async def diff_table(
    source: Cluster, target: Cluster, table: TableName, *, source_role: str = "primary",
    target_role: str = "standby", options: DiffOptions = DiffOptions(),
    progress: Progress = NullProgress(),
) -> TableDiff:
    """Compare one table of ``source`` with the same table of ``target``.

    Raises NotFound when the table exists on neither side."""
    started = time.monotonic()
    task = f"diff {table}"
    progress.start(task, None)
    try:
        s_meta, t_meta = await asyncio.gather(table_meta_or_none(source, table),
                                              table_meta_or_none(target, table))
        if s_meta is None and t_meta is None:
            raise NotFound(f"table {table} does not exist on {source_role} or {target_role}")
        result = TableDiff(table, source_role, target_role, s_meta, t_meta,
                           compare_schema(s_meta, t_meta, options.shape))
        if t_meta is not None and is_drtool_fence(t_meta.write_hook):
            result.notes.append(f"the {target_role} is fenced by drtool: its write hook refuses "
                                "the application's writes until it is promoted")
        src = Side(source, table, options.search)
        tgt = Side(target, table, options.search)
        if s_meta is not None and t_meta is not None and s_meta.primary_key == t_meta.primary_key:
            found = await find_differences(src, tgt, [(None, None)], options.search)
            result.set_keys(found)
            result.source_count, result.target_count = found.source_count, found.target_count
        else:
            await _count_only(result, src if s_meta else None, tgt if t_meta else None)
        result.traffic.add(src.traffic)
        result.traffic.add(tgt.traffic)
        progress.advance(task, result.source_count, result.traffic.bytes)
        result.seconds = time.monotonic() - started
        return result
    finally:
        progress.finish(task)


async def _count_only(result: TableDiff, src: Side | None, tgt: Side | None) -> None:
    """Documents are not comparable key by key: a table missing on one side, or primary keys
    that differ. Count each side's documents with one fold."""
    async def count(side: Side | None) -> int:
        if side is None:
            return 0
        (chunks,) = await side.chunks([(None, None)], WHOLE)
        return chunks[0][1]

    result.source_count, result.target_count = await asyncio.gather(count(src), count(tgt))
    result.keys_listed = False
    if src is not None and tgt is not None:
        result.notes.append("primary keys differ: documents not compared key by key")
        if result.source_count or result.target_count:
            result.ranges_differing = 1
    else:
        result.missing_count, result.extra_count = (
            (result.source_count, 0) if tgt is None else (0, result.target_count))


async def diff_tables(
    source: Cluster, target: Cluster, tables: list[TableName], *, source_role: str = "primary",
    target_role: str = "standby", options: DiffOptions = DiffOptions(),
    progress: Progress = NullProgress(),
) -> list[TableDiff]:
    """``diff_table`` for each table, a few at a time; results in the order of ``tables``. A
    table whose diff loses its connection to a cluster is compared again (drtool.util.retry)."""
    return await each_again_after_lost_connection(
        tables, lambda t: diff_table(source, target, t, source_role=source_role,
                                     target_role=target_role, options=options, progress=progress),
        options.table_concurrency, lambda t, text: progress.note(f"diff {t}", text))


async def tables_of_both(policy: Policy, source: Cluster, target: Cluster,
                         requested: list[TableName], where: str) -> list[TableName]:
    """Tables to compare: present on either side; the requested ones (each must exist on one
    side, else NotFound naming ``where``) or the policy's selection."""
    s_tables, t_tables = await asyncio.gather(source.list_tables(), target.list_tables())
    return select_tables(policy, sorted(set(s_tables) | set(t_tables)), requested, where=where)
