"""The archive of one runner: the tables' archivers, the primary's clock, the uploader.

``Archive.run(tables)`` keeps every given table's log until ``stop()``; ``follow(tables)``
starts archivers for new tables and stops those of tables gone. The clock is measured every
second on the source cluster. The uploader moves sealed slices from the spool into the
repository oldest first; while the repository is unreachable they wait in the spool (retried
every few seconds) and are uploaded when it answers again: no break unless the spool fills.
On ``stop()`` every archiver seals its open slice (within ``STOP_GRACE`` seconds, or it is
cancelled and that slice dropped), and the uploader keeps going for up to
``FLUSH_TIMEOUT`` seconds to empty the spool (what is left is uploaded by the next run).
Every ``MERGE_EVERY`` seconds the aged slices of each table are merged (changelog.merge).
"""

from __future__ import annotations

import asyncio
import contextlib


from drtool.changelog.archiver import ArchiveSettings, MakeBase, TableArchiver
from drtool.changelog.clock import PrimaryClock
from drtool.changelog.merge import LEVELS, Level, merge_table
from drtool.changelog.spool import Spool
from drtool.cluster.base import Cluster
from drtool.errors import DrtoolError
from drtool.model import TableName
from drtool.repo.repository import Repository
from drtool.changelog.report import Reporter

CLOCK_EVERY = 1.0
FLUSH_TIMEOUT = 30.0
STOP_GRACE = 15.0  # seconds an archiver gets to seal its open slice when asked to stop
UPLOAD_RETRY = 2.0
MERGE_EVERY = 60.0


class Archive:
    def __init__(self, cluster: Cluster, repo: Repository, spool: Spool, events: Reporter,
                 settings: ArchiveSettings, make_base: MakeBase, *,
                 merge_every: float = MERGE_EVERY, levels: tuple[Level, ...] = LEVELS) -> None:
        self.cluster, self.repo, self.spool, self.events = cluster, repo, spool, events
        self.settings, self.make_base = settings, make_base
        self.merge_every, self.levels = merge_every, levels
        self.clock = PrimaryClock(cluster.server_time)  # type: ignore[attr-defined]
        self.archivers: dict[TableName, TableArchiver] = {}
        self._tasks: dict[TableName, asyncio.Task] = {}
        self._retired: set[asyncio.Task] = set()  # archivers of tables no longer followed
        self._stop = asyncio.Event()
        self.uploaded_slices = 0
        self.uploaded_bytes = 0
        self.uploaded_until: dict[str, int] = {}  # table key -> t1 of the newest uploaded slice

    def stop(self) -> None:
        self._stop.set()

    async def run(self, tables: list[TableName]) -> None:
        """Archive ``tables`` until ``stop()``. Raises ClusterUnreachable when the primary's
        clock cannot be read at start."""
        await self.clock.measure()
        ticks = asyncio.create_task(self._ticks(), name="archive clock")
        uploader = asyncio.create_task(self._upload_loop(), name="archive upload")
        merger = asyncio.create_task(self._merge_loop(), name="archive merge")
        try:
            self.follow(tables)
            await self._stop.wait()
        finally:
            await self._stop_archivers()
            for task in (ticks, uploader, merger):  # one uploader at a time: the flush next
                task.cancel()
            await asyncio.gather(ticks, uploader, merger, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush(), FLUSH_TIMEOUT)

    def follow(self, tables: list[TableName]) -> None:
        for table in tables:
            if table not in self.archivers:
                archiver = TableArchiver(self.cluster, table, self.repo, self.clock, self.spool,
                                         self.events, self.settings, self.make_base)
                self.archivers[table] = archiver
                self._tasks[table] = asyncio.create_task(archiver.run(),
                                                        name=f"archive {table}")
        for table in set(self.archivers) - set(tables):
            self.archivers.pop(table).stop()
            self._retired.add(self._tasks.pop(table))
        self._retired = {task for task in self._retired if not task.done()}

    async def _stop_archivers(self) -> None:
        """Ask every archiver to stop (each seals its open slice) and wait for them, those of
        tables no longer followed too, at most ``STOP_GRACE`` seconds; one still running then
        is cancelled (its open slice is dropped, as if the runner had been killed)."""
        for archiver in self.archivers.values():
            archiver.stop()
        tasks = {*self._tasks.values(), *self._retired}
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in late:
            task.cancel()
        names = sorted(str(t) for t, task in self._tasks.items() if task in late)
        if late:
            self.events.warn("log-stop-late", f"{len(late)} table archiver(s) did not stop "
                             f"within {STOP_GRACE:g} s and were cancelled (their open slices "
                             f"are dropped): {', '.join(names) or 'tables no longer followed'}")
            await asyncio.wait(late, timeout=STOP_GRACE)

    async def _ticks(self) -> None:
        while True:
            with contextlib.suppress(DrtoolError):
                await self.clock.measure()
            self.events.metrics.archive(self.lag(), self.spool.size)
            await asyncio.sleep(CLOCK_EVERY)

    async def _merge_loop(self) -> None:
        """Every ``merge_every`` seconds, merge each table's aged slices (changelog.merge)."""
        while True:
            await asyncio.sleep(self.merge_every)
            for table in list(self.archivers):
                try:
                    await merge_table(self.repo, str(table), self.clock.now_ms(), self.levels)
                except DrtoolError as err:
                    self.events.warn("log-merge-failed", f"{table}: merging slices: {err}",
                                     table=str(table))

    def lag(self) -> float | None:
        """Seconds between the primary's clock now and the oldest 'newest uploaded slice'
        of the archived tables: the repository's RPO (None before every table has one)."""
        keys = [a._key for a in self.archivers.values()]
        if not keys or any(k not in self.uploaded_until for k in keys) or not self.clock.synced:
            return None
        return max(0.0, (self.clock.now_ms() - min(self.uploaded_until[k] for k in keys)) / 1000)

    async def upload_pending(self) -> int:
        """Upload every spooled slice, oldest first; return how many. Raises what the
        storage raises (the slice stays spooled)."""
        done = 0
        for path, name in self.spool.pending():
            blob = await asyncio.to_thread(path.read_bytes)
            await self.repo.put_log_blob(name, blob)
            await self.spool.remove(path)
            self.uploaded_slices += 1
            self.uploaded_bytes += len(blob)
            table_key, t1 = name.split("/")[1], int(name.rsplit("-", 1)[1])
            self.uploaded_until[table_key] = max(self.uploaded_until.get(table_key, 0), t1)
            self.events.metrics.slice_uploaded(len(blob))
            done += 1
        return done

    async def _upload_loop(self) -> None:
        failing = False
        while True:
            self.spool.arrived.clear()
            try:
                await self.upload_pending()
                if failing:
                    self.events.emit("log-upload-resumed", "the repository answers again: "
                                     "spooled slices uploaded")
                failing = False
            except DrtoolError as err:
                if not failing:
                    self.events.warn("log-upload-failed", f"uploading slices: {err}; they wait "
                                     f"in the spool ({self.spool.size} bytes), retrying")
                failing = True
                await asyncio.sleep(UPLOAD_RETRY)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.spool.arrived.wait(), 1.0)

    async def _flush(self) -> None:
        while self.spool.pending():
            try:
                await self.upload_pending()
            except DrtoolError:
                await asyncio.sleep(UPLOAD_RETRY)


