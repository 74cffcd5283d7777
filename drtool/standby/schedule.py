"""Scheduled snapshots inside the runner: ``[schedule] snapshot_every``, one at a time.

Each run opens the repository, snapshots the selected tables of the cluster named by
``schedule.scheduled_from`` (the standby unless the policy says otherwise), applies the
``[retention]`` rules (forget; and prune when ``schedule.prune``), closes the repository and
records the outcome in the runner record (``drtool status``). Runs never overlap: the next one
is due ``snapshot_every`` after the previous one finished (or after the runner started, or the
last recorded snapshot, whichever is later).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from drtool.changelog.retention import log_retention
from drtool.cluster.base import Cluster
from drtool.snapshots import retention
from drtool.config.policy import select_tables
from drtool.wiring.open import open_repository
from drtool.snapshots.snapshot import take_snapshot
from drtool.errors import DrtoolError
from drtool.wiring.snapshots import snapshot_options
from drtool.config.policy import Policy, RetentionPolicy
from drtool.standby.events import Events


async def snapshot_once(policy: Policy, cluster: Cluster, role: str) -> dict:
    """Take one snapshot and apply retention; return the record for status. Raises
    DrtoolError (the caller records the failure)."""
    started = time.time()
    async with await open_repository(policy) as repo:
        tables = select_tables(policy, await cluster.list_tables(), [], where=role)
        options = await snapshot_options(policy, cluster, role)
        manifest = await take_snapshot(repo, cluster, tables, policy_name=policy.name,
                                       source=role, options=options)
        record = {"id": manifest.id, "result": "ok", "time": time.time(),
                  "started": started, "documents": manifest.doc_count,
                  "bytes_new": manifest.bytes_new, "tables": len(manifest.tables),
                  "source": role}
        if policy.retention != RetentionPolicy():
            report = await retention.forget(repo, policy.retention, prune=policy.schedule.prune,
                                            log=log_retention(policy.retention))
            record["forgot"] = len(report.removed)
            if report.prune is not None:
                record["pruned_bytes"] = report.prune.bytes_deleted
    return record


class SnapshotSchedule:
    """The runner's snapshot loop. ``cluster_for(role)`` gives the connected cluster of a
    policy role; ``record(snapshot)`` stores the outcome (runner record)."""

    def __init__(self, policy: Policy, events: Events, cluster_for: Callable[[str], Cluster],
                 record: Callable[[dict], Awaitable[None]], *, last: float | None) -> None:
        self.policy, self.events = policy, events
        self._cluster_for, self._record = cluster_for, record
        self.every = policy.schedule.snapshot_every
        self.last = last
        self.started = time.time()

    def due_in(self) -> float:
        base = max(self.last or 0.0, self.started)
        return max(0.0, base + (self.every or 0) - time.time())

    async def run(self, stopped: asyncio.Event) -> None:
        if not self.every:
            return
        if self.policy.retention == RetentionPolicy():
            self.events.warn("no-retention", f"scheduled snapshots every {self.every:g} s and no "
                             "[retention] in the policy: every snapshot is kept and the "
                             "repository only grows; add [retention] keep_last/keep_daily/... "
                             "to forget old ones")
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self.due_in())
            if stopped.is_set():
                return
            await self.run_once()

    async def run_once(self) -> dict:
        role = self.policy.schedule.scheduled_from
        self.events.emit("snapshot-started", f"scheduled snapshot from the {role}", source=role)
        try:
            record = await snapshot_once(self.policy, self._cluster_for(role), role)
        except DrtoolError as err:
            record = {"result": "failed", "message": str(err), "time": time.time(),
                      "source": role}
            self.events.metrics.error("snapshot")
            self.events.warn("snapshot-failed", f"scheduled snapshot from the {role} failed: "
                             f"{err}", source=role)
        else:
            self.events.emit("snapshot-done", f"snapshot {record['id']} of {record['tables']} "
                             f"tables ({record['documents']} documents, {record['bytes_new']} "
                             f"new bytes) from the {role}", **record)
        self.last = record["time"]
        self.events.metrics.snapshot(record["time"], record["result"] == "ok")
        with contextlib.suppress(DrtoolError):
            await self._record(record)
        return record
