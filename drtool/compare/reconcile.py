"""Making a target cluster's tables equal to a source cluster's, writing only what differs.

Per table (``reconcile_table``): diff (drtool.compare.diff); then schema: a missing table is
created like the source's (and copied whole), indexes missing or with another function are
(re)created from their blobs and extra ones dropped, the write hook set or removed; then
documents: the source's current texts of missing and changed keys are written to the target
(``conflict="replace"``, ``ignore_write_hook``), extra keys deleted. The repaired ranges are
then compared again: a document that changed on the source meanwhile is repaired in another
round, up to ``max_rounds``. Things reconcile does not change are reported as ``unresolved``:
a differing primary key, shard/replica counts, a table only on the target (dropped only when
named in ``drop_tables``).

Usable from a long-running asyncio process (the replication runner reconciles one table after
a feed overflow): clusters are passed in connected and left open.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field

from drtool.cluster.base import Cluster
from drtool.util.retry import each_again_after_lost_connection
from drtool.compare.diff import DiffOptions, TableDiff, diff_table, shape_differences
from drtool.compare.diff_ranges import Side, Traffic, find_differences
from drtool.util.progress import NullProgress, Progress
from drtool.cluster.scanning import resumable_scan
from drtool.compare.shape import apply_shape, create_table_like, plan_shape
from drtool.errors import ClusterError
from drtool.model import KeyText, TableName, WriteResult
from drtool.reql.ordering import key_order

WRITE_OVERHEAD = 200  # bytes per get_docs / insert / delete query besides keys and documents


@dataclass(frozen=True)
class ReconcileOptions:
    dry_run: bool = False
    drop_tables: frozenset[TableName] = frozenset()  # tables only on the target: drop these
    max_rounds: int = 3  # repair + re-check rounds per table
    batch_size: int = 1000
    diff: DiffOptions = DiffOptions()


@dataclass
class TableReconcile:
    """What reconcile did (or, in a dry run, would do) to one table."""

    before: TableDiff
    dry_run: bool = False
    actions: list[str] = field(default_factory=list)  # schema actions and table copies
    to_write: list[KeyText] = field(default_factory=list)  # first round: missing + changed
    to_delete: list[KeyText] = field(default_factory=list)  # first round: extra
    written: int = 0  # documents inserted or replaced on the target
    deleted: int = 0
    rounds: int = 0  # repair rounds run
    remaining: int = 0  # documents still differing after the last round
    unresolved: list[str] = field(default_factory=list)
    #: the only thing left: documents the source kept changing through every round
    still_changing: bool = False
    traffic: Traffic = field(default_factory=Traffic)  # writes and re-checks (diff: before)

    @property
    def table(self) -> TableName:
        return self.before.table

    @property
    def equal_after(self) -> bool:
        """The target now equals the source (False for a dry run with anything to do)."""
        if self.dry_run:
            return self.before.equal
        return not self.unresolved and not self.remaining

    def to_json(self) -> dict:
        return {
            "table": str(self.table), "dry_run": self.dry_run, "equal_after": self.equal_after,
            "actions": self.actions, "to_write": self.to_write, "to_delete": self.to_delete,
            "written": self.written, "deleted": self.deleted, "rounds": self.rounds,
            "remaining": self.remaining, "unresolved": self.unresolved,
            "traffic": self.traffic.to_json(), "diff": self.before.to_json(),
        }


async def reconcile_table(
    source: Cluster, target: Cluster, table: TableName, *, source_role: str = "primary",
    target_role: str = "standby", options: ReconcileOptions = ReconcileOptions(),
    progress: Progress = NullProgress(),
) -> TableReconcile:
    """Make ``table`` on ``target`` equal to ``table`` on ``source`` (see the module doc)."""
    before = await diff_table(source, target, table, source_role=source_role,
                              target_role=target_role, options=options.diff, progress=progress)
    rep = TableReconcile(before, dry_run=options.dry_run)
    if before.equal:
        return rep
    task = f"reconcile {table}"
    progress.start(task, None)
    try:
        await _reconcile(source, target, rep, options, progress, task, target_role)
    finally:
        progress.finish(task)
    return rep


async def _reconcile(source: Cluster, target: Cluster, rep: TableReconcile,
                     options: ReconcileOptions, progress: Progress, task: str,
                     target_role: str) -> None:
    before, table, dry = rep.before, rep.table, options.dry_run
    s_meta, t_meta = before.source_meta, before.target_meta
    if s_meta is None:
        if table not in options.drop_tables:
            rep.unresolved.append(f"table exists only on {target_role}: name it with --table to "
                                  "drop it there")
            return
        rep.actions.append(f"drop table ({before.target_count} documents)")
        if not dry:
            await target.drop_table(table)
        return
    if t_meta is not None and t_meta.primary_key != s_meta.primary_key:
        rep.unresolved.append(
            f"primary key {s_meta.primary_key!r} on {before.source_role} but "
            f"{t_meta.primary_key!r} on {target_role}: drop the table on {target_role}, then "
            "run reconcile again")
        return
    shape = options.diff.shape
    for item in shape_differences(s_meta, t_meta, shape) if t_meta is not None else []:
        rep.unresolved.append(
            f"{item}: {shape.describe(item, s_meta)} on {before.source_role}, "
            f"{getattr(t_meta, item)} on {target_role}: not changed; reconfigure the table")
    plan = plan_shape(s_meta, t_meta, mirror=True)
    if t_meta is None:
        rep.actions.append(f"create table and copy {before.source_count} documents")
    rep.actions.extend(str(a) for a in plan.actions)
    if t_meta is not None:
        rep.to_write = sorted(before.missing + before.changed, key=key_order)
        rep.to_delete = list(before.extra)
    if dry:
        return
    if t_meta is None:
        await create_table_like(target, s_meta, table, shards=shape.create("shards"),
                                replicas=shape.create("replicas"))
        await _copy_table(source, target, rep, options, progress, task)
        regions: list = [(None, None)]
        write, delete = [], []
    else:
        regions, write, delete = before.regions, rep.to_write, rep.to_delete
    if plan.actions:
        await apply_shape(target, table, plan.actions)
    await _repair_rounds(source, target, rep, regions, write, delete, options, progress, task)


async def _repair_rounds(source: Cluster, target: Cluster, rep: TableReconcile, regions: list,
                         write: list[KeyText], delete: list[KeyText], options: ReconcileOptions,
                         progress: Progress, task: str) -> None:
    """Write, re-check the repaired ranges, repeat with what still differs."""
    table, params = rep.table, options.diff.search
    while True:
        await _write_keys(source, target, rep, write, delete, options, progress, task)
        await target.sync(table)
        src, tgt = Side(source, table, params), Side(target, table, params)
        found = await find_differences(src, tgt, regions, params)
        rep.traffic.add(src.traffic)
        rep.traffic.add(tgt.traffic)
        rep.rounds += 1
        rep.remaining = found.count
        if not found.count:
            return
        if rep.rounds >= options.max_rounds:
            rep.still_changing = not rep.unresolved
            rep.unresolved.append(
                f"{found.count} documents still differ after {rep.rounds} rounds (the "
                f"{rep.before.source_role} keeps changing them): run reconcile again")
            return
        progress.note(task, f"{found.count} documents changed meanwhile: repairing them again")
        regions, write, delete = found.regions, found.missing + found.changed, found.extra


async def _write_keys(source: Cluster, target: Cluster, rep: TableReconcile,
                      write: list[KeyText], delete: list[KeyText], options: ReconcileOptions,
                      progress: Progress, task: str) -> None:
    """Copy the source's current documents of ``write`` (keys gone from the source meanwhile
    are deleted instead) and delete ``delete`` on the target."""
    table, size = rep.table, options.batch_size
    delete = list(delete)
    for start in range(0, len(write), size):
        batch = write[start:start + size]
        rows = await source.get_docs(table, batch)
        rep.traffic.queries += 1
        rep.traffic.sent += WRITE_OVERHEAD + sum(len(k) for k in batch)
        rep.traffic.received += sum(len(k) + len(d) for k, d in rows)
        present = {key_order(k) for k, _ in rows}
        delete.extend(k for k in batch if key_order(k) not in present)
        await _insert(target, rep, [d for _, d in rows], progress, task)
    for start in range(0, len(delete), size):
        batch = delete[start:start + size]
        result = await target.delete_keys(table, batch, ignore_write_hook=True)
        _check(result, rep, "deleting from")
        rep.traffic.queries += 1
        rep.traffic.sent += WRITE_OVERHEAD + sum(len(k) for k in batch)
        rep.deleted += result.deleted


async def _insert(target: Cluster, rep: TableReconcile, docs: list[str], progress: Progress,
                  task: str) -> None:
    if not docs:
        return
    result = await target.insert_texts(rep.table, docs, conflict="replace", ignore_write_hook=True)
    _check(result, rep, "writing to")
    if result.written != len(docs):
        raise ClusterError(f"writing to {rep.before.target_role} table {rep.table}: the server "
                           f"acknowledged {result.written} of {len(docs)} documents")
    rep.written += result.inserted + result.replaced
    rep.traffic.queries += 1
    rep.traffic.sent += WRITE_OVERHEAD + sum(len(d) for d in docs)
    progress.advance(task, len(docs), sum(len(d) for d in docs))


def _check(result: WriteResult, rep: TableReconcile, doing: str) -> None:
    if result.errors:
        raise ClusterError(f"{doing} {rep.before.target_role} table {rep.table} failed: "
                           f"{result.first_error}")


async def _copy_table(source: Cluster, target: Cluster, rep: TableReconcile,
                      options: ReconcileOptions, progress: Progress, task: str) -> None:
    """A table that was missing on the target: stream every document across."""
    scan = resumable_scan(source, rep.table, batch_size=options.batch_size)
    async with aclosing(scan):
        async for rows in scan:
            rep.traffic.received += sum(len(k) + len(d) for k, d in rows)
            await _insert(target, rep, [d for _, d in rows], progress, task)


async def reconcile_tables(
    source: Cluster, target: Cluster, tables: list[TableName], *, source_role: str = "primary",
    target_role: str = "standby", options: ReconcileOptions = ReconcileOptions(),
    progress: Progress = NullProgress(),
) -> list[TableReconcile]:
    """``reconcile_table`` for each table, a few at a time; results in the order of ``tables``.
    A table whose reconcile loses its connection to a cluster starts again with a new diff
    (its writes are idempotent; drtool.util.retry)."""
    return await each_again_after_lost_connection(
        tables, lambda t: reconcile_table(source, target, t, source_role=source_role,
                                          target_role=target_role, options=options,
                                          progress=progress),
        options.diff.table_concurrency, lambda t, text: progress.note(f"reconcile {t}", text))
