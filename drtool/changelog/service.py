"""The archive inside the runner (``drtool replicate`` with ``[archive]``).

``ArchiveService.run(cluster, halt, selected)`` opens the repository and the spool, keeps the
log of the selected tables of ``cluster`` (the current primary) until ``halt`` is set,
following the catalogue every ``[replication] schema_poll``. A repository that cannot be
opened is retried (backoff 1 s doubling to 30 s); the log needs neither the standby nor a
lease. Bases are incremental snapshots of one table (``take_snapshot`` with ``extra.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from drtool.changelog.archive import Archive
from drtool.changelog.archiver import BACKOFF_FIRST, BACKOFF_MAX, ArchiveSettings
from drtool.changelog.spool import Spool
from drtool.cluster.base import Cluster
from drtool.wiring.open import open_repository
from drtool.snapshots.snapshot import SnapshotOptions, take_snapshot
from drtool.errors import DrtoolError
from drtool.model import TableName
from drtool.config.policy import Policy
from drtool.changelog.report import Reporter


class ArchiveService:
    def __init__(self, policy: Policy, events: Reporter) -> None:
        assert policy.archive is not None
        self.policy, self.events = policy, events
        self.archive: Archive | None = None

    def settings(self) -> ArchiveSettings:
        a = self.policy.archive
        assert a is not None
        return ArchiveSettings(slice_every=a.slice_every, max_slice_bytes=a.max_slice,
                               base_every=a.base_every,
                               queue_size=self.policy.replication.changefeed_queue_size)

    async def run(self, cluster: Cluster, halt: asyncio.Event,
                  selected: Callable[[], Awaitable[list[TableName]]]) -> None:
        delay = BACKOFF_FIRST
        while not halt.is_set():
            try:
                await self._run_once(cluster, halt, selected)
                return
            except DrtoolError as err:
                self.events.warn("archive-error", f"change log: {err}; retrying in {delay:g} s")
                self.events.metrics.error("archive")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _run_once(self, cluster: Cluster, halt: asyncio.Event,
                        selected: Callable[[], Awaitable[list[TableName]]]) -> None:
        policy, a = self.policy, self.policy.archive
        assert a is not None
        async with await open_repository(policy) as repo:
            spool = Spool(a.spool, a.spool_size)

            async def make_base(table: TableName, extra: dict) -> str:
                options = SnapshotOptions(primary_reads=policy.throttle.primary_reads,
                                          max_layers=policy.schedule.full_after_layers,
                                          max_delta_ratio=policy.schedule.full_after_delta)
                manifest = await take_snapshot(repo, cluster, [table], policy_name=policy.name,
                                               source="primary", options=options, extra=extra)
                return manifest.id

            archive = Archive(cluster, repo, spool, self.events, self.settings(), make_base)
            self.archive = archive
            task = asyncio.create_task(archive.run(await selected()))
            try:
                while not halt.is_set() and not task.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(halt.wait(), policy.replication.schema_poll)
                    with contextlib.suppress(DrtoolError):
                        archive.follow(await selected())
            finally:
                archive.stop()
                await asyncio.gather(task, return_exceptions=True)
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
