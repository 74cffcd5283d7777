"""Bringing a standby table up to date before streaming (drtool.standby.table): its shape,
the initial copy of a table the target lacks, the repair of one it has.

``CatchUp`` is a mixin of ``TableReplicator``: it uses the replicator's source, target,
table, settings, events, stats and ``_record``/``_write``. The copy writes every document
of the source (reads limited by ``primary_reads``), then builds the indexes and hook; the
repair reads and writes only what differs (never a full recopy), by a streaming hash merge
for tables up to ``MERGE_MAX_DOCS`` or busy ones, else by the digest search of
drtool.compare.reconcile. Both are idempotent: run again after an interruption, they finish.
"""

from __future__ import annotations

import time
from contextlib import aclosing

from drtool.compare.diff import DiffOptions, table_meta_or_none
from drtool.compare.diff_ranges import SearchParams
from drtool.compare.reconcile import ReconcileOptions, reconcile_table
from drtool.cluster.scanning import resumable_scan
from drtool.compare.shape import ShapeAction, apply_shape, create_table_like, plan_shape
from drtool.errors import SchemaMismatch
from drtool.standby.repair import merge_repair
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


class CatchUp:
    """Shape, copy and repair of one replicated table (see the module doc)."""

    async def _prepare(self) -> bool:
        """Make the target table exist with the source's shape; True if it was created."""
        meta = await self.source.table_meta(self.table)  # NotFound: dropped on the source
        existing = await table_meta_or_none(self.target, self.table)
        if existing is None:
            await create_table_like(self.target, meta, self.table, shards=self.settings.shards,
                                    replicas=self.settings.replicas)
            await self._keep_fence(meta, None)  # fenced before anything is copied
            return True
        if existing.primary_key != meta.primary_key:
            raise SchemaMismatch(
                f"{self._name}: primary key {meta.primary_key!r} on {self.source_role} but "
                f"{existing.primary_key!r} on {self.target_role}: not overwritten; drop the "
                f"table on {self.target_role} (the runner then copies it) or exclude it in "
                "[tables]")
        await self.follow_schema(meta, existing)
        return False

    async def follow_schema(self, meta=None, existing=None) -> list[str]:
        """Give the target table the source's indexes and write hook (shard and replica
        counts are left as they are). Returns the actions taken, e.g. "create index by_x"."""
        meta = meta or await self.source.table_meta(self.table)
        existing = existing or await self.target.table_meta(self.table)
        actions = self._shape(plan_shape(meta, existing, mirror=True).actions)
        if actions:
            await apply_shape(self.target, self.table, actions)
            for action in actions:
                self.events.emit("schema-changed", f"{self._name}: {action} on "
                                 f"{self.target_role}", table=self._name, action=str(action))
        if await self._keep_fence(meta, existing.write_hook):
            actions.append(ShapeAction("fence write hook"))
        return [str(a) for a in actions]

    def _shape(self, actions: list[ShapeAction]) -> list[ShapeAction]:
        """With the write-hook standby fence the source's hook is not copied (it is recorded
        for the promotion instead, see ``_keep_fence``)."""
        if self.settings.hook_fence is None:
            return actions
        return [a for a in actions if not a.kind.endswith("write hook")]

    async def _keep_fence(self, meta, current: bytes | None) -> bool:
        """Keep the write-hook standby fence on the target table (when the policy has it)."""
        fence = self.settings.hook_fence
        if fence is None or not await fence.keep(self.target, self.table, meta.write_hook, current):
            return False
        self.events.emit("standby-fenced", f"{self._name}: write hook refusing the "
                         f"application's writes set on {self.target_role} ({fence.message})",
                         table=self._name)
        return True

    async def _copy(self) -> None:
        total = await self.source.doc_count_estimate(self.table)
        await self._record("copying", None, progress={"done": 0, "total": total})
        self.events.emit("copy-started", f"{self._name}: copying about {total} documents from "
                         f"{self.source_role}", table=self._name, total=total)
        reads = DocRateLimiter(self.settings.source_reads) if self.settings.source_reads else None
        done, nbytes, last = 0, 0, time.monotonic()
        scan = resumable_scan(self.source, self.table, batch_size=self.settings.batch_size,
                              reads=reads)
        async with aclosing(scan):
            async for rows in scan:
                docs = [d for _, d in rows]
                await self._write(docs, [])
                done += len(docs)
                size = sum(len(d) for d in docs)
                nbytes += size
                self.events.metrics.copied(self._name, len(docs), size)
                if time.monotonic() - last >= PROGRESS_EVERY:
                    last = time.monotonic()
                    await self._record("copying", None, progress={"done": done, "total": total})
        await self.target.sync(self.table)
        meta = await self.source.table_meta(self.table)
        await apply_shape(self.target, self.table,
                          self._shape(plan_shape(meta, None, mirror=True).actions))
        await self._keep_fence(meta, (await self.target.table_meta(self.table)).write_hook)
        self.stats.copied += done
        self.events.emit("table-copied", f"{self._name}: copied {done} documents ({nbytes} "
                         f"bytes) to {self.target_role}", table=self._name, documents=done,
                         bytes=nbytes)

    async def _repair(self, reason: str) -> None:
        await self._record("repairing", f"repair after {reason}")
        self.events.metrics.repair(self._name, reason)
        started = time.monotonic()
        docs = await self.source.doc_count_estimate(self.table)
        method = "merge" if docs <= MERGE_MAX_DOCS or self._busy() else "digest"
        self.events.emit("repair-started", f"{self._name}: comparing with {self.source_role} "
                         f"after {reason} ({method})", table=self._name, reason=reason,
                         method=method)
        if method == "merge":
            got = await merge_repair(self.source, self.target, self.table,
                                     batch_size=self.settings.batch_size)
            differing, read, written, deleted, nbytes = (
                got.differing, got.read, got.written, got.deleted, got.bytes)
        else:
            rep = await reconcile_table(
                self.source, self.target, self.table, source_role=self.source_role,
                target_role=self.target_role, options=ReconcileOptions(
                    batch_size=self.settings.batch_size, max_rounds=1, diff=REPAIR_DIFF))
            before = rep.before
            differing = before.missing_count + before.changed_count + before.extra_count
            read, written, deleted = rep.written, rep.written, rep.deleted
            nbytes = before.traffic.bytes + rep.traffic.bytes
        record = {"reason": reason, "method": method, "differing": differing, "read": read,
                  "written": written, "deleted": deleted, "bytes": nbytes,
                  "seconds": round(time.monotonic() - started, 3), "time": time.time()}
        self.stats.repairs += 1
        self.stats.last_repair = record
        self.events.metrics.repaired(self._name, read, written + deleted)
        self.events.emit("repair-finished", f"{self._name}: {differing} documents differed; "
                         f"read {read} from {self.source_role}, wrote {written} and deleted "
                         f"{deleted} on {self.target_role} ({nbytes} bytes)", table=self._name,
                         **{k: v for k, v in record.items() if k != "time"})

    def _busy(self) -> bool:
        """Did the table change fast recently (a repair would chase a moving target)?"""
        return self.stats.recent_rate() >= BUSY_RATE
