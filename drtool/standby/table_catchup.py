"""Bringing a standby table up to date before streaming (drtool.standby.table): its shape,
the initial copy of a table the target lacks, the repair of one it has.

``CatchUp`` works for a ``TableReplicator`` through the small ``CatchUpHost`` interface (its
clusters, table, settings, events, stats, and ``record``/``write``). The copy writes every document
of the source (reads limited by ``primary_reads``), then builds the indexes and hook; the
repair reads and writes only what differs (never a full recopy), by a streaming hash merge
for tables up to ``MERGE_MAX_DOCS`` or busy ones, else by the digest search of
drtool.compare.reconcile. Both are idempotent: run again after an interruption, they finish.
"""

from __future__ import annotations

import time
from typing import Protocol
from contextlib import aclosing

from drtool.compare.diff import DiffOptions, table_meta_or_none
from drtool.compare.diff_ranges import SearchParams
from drtool.compare.reconcile import ReconcileOptions, reconcile_table
from drtool.cluster.scanning import resumable_scan
from drtool.compare.shape import ShapeAction, apply_shape, create_table_like, plan_shape
from drtool.cluster.base import Cluster
from drtool.errors import ClusterError, SchemaMismatch
from drtool.model import TableName
from drtool.standby.events import Events
from drtool.standby.repair import merge_repair
from drtool.standby.tableinfo import Stats, TableSettings
from drtool.util.throttle import DocRateLimiter

PROGRESS_EVERY = 2.0  # seconds between copy progress records
# Repairs run while the application writes. One round: what changes on the source after the
# feed was ready is in the feed, so re-checking ranges the writer keeps changing would only
# chase changes the feed delivers anyway. A shallow search (leaves of up to 1,024 documents
# compared per document, 32 chunks per level): each level of the digest search takes a
# round trip during which the writer makes new differences, so few levels converge where
# the deep, byte-frugal default of `drtool diff` chases them (measured on the real server
# with ~400 writes/s into a 20,000-document table: 7.6 s and 1.0 MB instead of 272 s).
REPAIR_DIFF = DiffOptions(search=SearchParams(leaf_size=1024, fanout=32))
# Tables up to this size, and any table that was changing fast, are repaired by a streaming
# hash merge (drtool.standby.repair: one pass, ~72 bytes per document and side); larger
# quiet tables by the digest search, which moves kilobytes when little differs.
MERGE_MAX_DOCS = 250_000
BUSY_RATE = 50.0  # changes per second over the last minute of streaming


class CatchUpHost(Protocol):
    """What the catch-up needs of the table replicator it works for."""

    source: Cluster
    target: Cluster
    table: TableName
    settings: TableSettings
    events: Events
    stats: Stats
    source_role: str
    target_role: str
    name: str  # the table's name, for messages

    async def record(self, state: str, message: str | None, *, progress: dict | None = None,
                     quiet: bool = False) -> None:
        """Record the table's state for ``drtool status``."""

    async def write(self, docs: list[str], keys: list[str]) -> None:
        """Upsert ``docs`` and delete ``keys`` on the target (drtool's own writes)."""


class CatchUp:
    """Shape, copy and repair of one replicated table (see the module doc), for ``host``."""

    def __init__(self, host: CatchUpHost) -> None:
        self.host = host

    async def prepare(self) -> bool:
        """Make the target table exist with the source's shape; True if it was created."""
        meta = await self.host.source.table_meta(self.host.table)  # NotFound: dropped on the source
        existing = await table_meta_or_none(self.host.target, self.host.table)
        if existing is None:
            shards = self.host.settings.shards or meta.shards
            replicas = self.host.settings.replicas or meta.replicas
            try:
                await create_table_like(self.host.target, meta, self.host.table, shards=shards,
                                        replicas=replicas)
            except ClusterError as err:
                if "replicas" not in str(err) and "shards" not in str(err):
                    raise
                raise ClusterError(
                    f"cannot create it on the {self.host.target_role} with {shards} shards and "
                    f"{replicas} replicas: {err}; set [replication] standby_replicas (and "
                    f"standby_shards) to what the {self.host.target_role} can hold, e.g. "
                    "standby_replicas = 1 for a one-server standby") from None
            await self._keep_fence(meta, None)  # fenced before anything is copied
            return True
        if existing.primary_key != meta.primary_key:
            raise SchemaMismatch(
                f"{self.host.name}: primary key {meta.primary_key!r} on {self.host.source_role} but "
                f"{existing.primary_key!r} on {self.host.target_role}: not overwritten; drop the "
                f"table on {self.host.target_role} (the runner then copies it) or exclude it in "
                "[tables]")
        await self.follow_schema(meta, existing)
        return False

    async def follow_schema(self, meta=None, existing=None) -> list[str]:
        """Give the target table the source's indexes and write hook (shard and replica
        counts are left as they are). Returns the actions taken, e.g. "create index by_x"."""
        meta = meta or await self.host.source.table_meta(self.host.table)
        existing = existing or await self.host.target.table_meta(self.host.table)
        actions = self._shape(plan_shape(meta, existing, mirror=True).actions)
        if actions:
            await apply_shape(self.host.target, self.host.table, actions)
            for action in actions:
                self.host.events.emit("schema-changed", f"{self.host.name}: {action} on "
                                 f"{self.host.target_role}", table=self.host.name, action=str(action))
        if await self._keep_fence(meta, existing.write_hook):
            actions.append(ShapeAction("fence write hook"))
        return [str(a) for a in actions]

    def _shape(self, actions: list[ShapeAction]) -> list[ShapeAction]:
        """With the write-hook standby fence the source's hook is not copied (it is recorded
        for the promotion instead, see ``_keep_fence``)."""
        if self.host.settings.hook_fence is None:
            return actions
        return [a for a in actions if not a.kind.endswith("write hook")]

    async def _keep_fence(self, meta, current: bytes | None) -> bool:
        """Keep the write-hook standby fence on the target table (when the policy has it)."""
        fence = self.host.settings.hook_fence
        if fence is None or not await fence.keep(self.host.target, self.host.table, meta.write_hook, current):
            return False
        self.host.events.emit("standby-fenced", f"{self.host.name}: write hook refusing the "
                         f"application's writes set on {self.host.target_role} ({fence.message})",
                         table=self.host.name)
        return True

    async def copy(self) -> None:
        total = await self.host.source.doc_count_estimate(self.host.table)
        await self.host.record("copying", None, progress={"done": 0, "total": total})
        self.host.events.emit("copy-started", f"{self.host.name}: copying about {total} documents from "
                         f"{self.host.source_role}", table=self.host.name, total=total)
        reads = DocRateLimiter(self.host.settings.source_reads) if self.host.settings.source_reads else None
        done, nbytes, last = 0, 0, time.monotonic()
        scan = resumable_scan(self.host.source, self.host.table, batch_size=self.host.settings.batch_size,
                              reads=reads)
        async with aclosing(scan):
            async for rows in scan:
                docs = [d for _, d in rows]
                await self.host.write(docs, [])
                done += len(docs)
                size = sum(len(d) for d in docs)
                nbytes += size
                self.host.events.metrics.copied(self.host.name, len(docs), size)
                if time.monotonic() - last >= PROGRESS_EVERY:
                    last = time.monotonic()
                    await self.host.record("copying", None, progress={"done": done, "total": total})
        await self.host.target.sync(self.host.table)
        meta = await self.host.source.table_meta(self.host.table)
        await apply_shape(self.host.target, self.host.table,
                          self._shape(plan_shape(meta, None, mirror=True).actions))
        await self._keep_fence(meta, (await self.host.target.table_meta(self.host.table)).write_hook)
        self.host.stats.copied += done
        self.host.events.emit("table-copied", f"{self.host.name}: copied {done} documents ({nbytes} "
                         f"bytes) to {self.host.target_role}", table=self.host.name, documents=done,
                         bytes=nbytes)

    async def repair(self, reason: str) -> None:
        await self.host.record("repairing", f"repair after {reason}")
        self.host.events.metrics.repair(self.host.name, reason)
        started = time.monotonic()
        docs = await self.host.source.doc_count_estimate(self.host.table)
        method = "merge" if docs <= MERGE_MAX_DOCS or self._busy() else "digest"
        self.host.events.emit("repair-started", f"{self.host.name}: comparing with {self.host.source_role} "
                         f"after {reason} ({method})", table=self.host.name, reason=reason,
                         method=method)
        if method == "merge":
            got = await merge_repair(self.host.source, self.host.target, self.host.table,
                                     batch_size=self.host.settings.batch_size)
            differing, read, written, deleted, nbytes = (
                got.differing, got.read, got.written, got.deleted, got.bytes)
        else:
            rep = await reconcile_table(
                self.host.source, self.host.target, self.host.table, source_role=self.host.source_role,
                target_role=self.host.target_role, options=ReconcileOptions(
                    batch_size=self.host.settings.batch_size, max_rounds=1, diff=REPAIR_DIFF))
            before = rep.before
            differing = before.missing_count + before.changed_count + before.extra_count
            read, written, deleted = rep.written, rep.written, rep.deleted
            nbytes = before.traffic.bytes + rep.traffic.bytes
        record = {"reason": reason, "method": method, "differing": differing, "read": read,
                  "written": written, "deleted": deleted, "bytes": nbytes,
                  "seconds": round(time.monotonic() - started, 3), "time": time.time()}
        self.host.stats.repairs += 1
        self.host.stats.last_repair = record
        self.host.events.metrics.repaired(self.host.name, read, written + deleted)
        self.host.events.emit("repair-finished", f"{self.host.name}: {differing} documents differed; "
                         f"read {read} from {self.host.source_role}, wrote {written} and deleted "
                         f"{deleted} on {self.host.target_role} ({nbytes} bytes)", table=self.host.name,
                         **{k: v for k, v in record.items() if k != "time"})

    def _busy(self) -> bool:
        """Did the table change fast recently (a repair would chase a moving target)?"""
        return self.host.stats.recent_rate() >= BUSY_RATE
