"""Breaks of the change log on the fake cluster: feed overflow, lost connection, runner
restart, repository unreachable (no break: the spool catches up), spool full (a break).
Each break leaves a correct timeline: the new timeline has its own base, nothing of the broken
one's open slice is visible, and restoring to the end gives the table as it is."""

from __future__ import annotations

import asyncio
import logging

import pytest

from drtool.repo import crypto
from drtool.changelog import archive as archive_module
from drtool.changelog.archive import Archive
from drtool.changelog.archiver import ArchiveSettings
from drtool.changelog.restore_at import prepare
from drtool.changelog.spool import Spool
from drtool.changelog.status import archive_status
from drtool.changelog.timeline import load_timelines, restorable
from drtool.cluster.fake import FakeServer
from drtool.snapshots.snapshot import take_snapshot
from drtool.errors import StorageUnreachable, UsageError
from drtool.model import TableName
from drtool.repo.repository import KeySources, Repository
from drtool.standby.events import LOGGER, Events
from drtool.storage.memory import MemoryStorage
from tests.conftest import connect_fake, sample_docs
from tests.replication_helpers import wait_until

T = TableName("app", "t")
DELTA_MS = 1000  # the documented δ: writes acknowledged before T − δ are in a restore to T


class FlakyStorage(MemoryStorage):
    """Memory storage that can be made unreachable (every call raises)."""

    down = False

    async def put(self, name, data):
        if self.down:
            raise StorageUnreachable("memory storage is down (test)")
        await super().put(name, data)

    async def stat(self, name):
        if self.down:
            raise StorageUnreachable("memory storage is down (test)")
        return await super().stat(name)


class Setup:
    def __init__(self, tmp_path, server: FakeServer, queue_size: int = 1_000_000,
                 spool_limit: int = 1 << 30, storage: FlakyStorage | None = None,
                 tables: tuple[TableName, ...] = (T,), wrap=lambda cluster: cluster) -> None:
        self.tmp, self.server, self.tables, self.wrap = tmp_path, server, tables, wrap
        self.storage = storage or FlakyStorage()
        self.queue_size, self.spool_limit = queue_size, spool_limit
        self.base_every = 0.0
        self.bases_written: list[str] = []

    async def start(self):
        ident = self.tmp / "identity"
        if not ident.exists():
            crypto.write_identity_file(ident)
            self.repo = await Repository.create(self.storage, KeySources(identity_file=ident))
        else:
            self.repo = await Repository.open(self.storage, KeySources(identity_file=ident))
        self.cluster = self.wrap(connect_fake(self.server))

        async def make_base(table, extra):
            sid = (await take_snapshot(self.repo, self.cluster, [table], policy_name="t",
                                       source="primary", extra=extra)).id
            self.bases_written.append(sid)
            return sid

        self.spool = Spool(self.tmp / "spool", self.spool_limit)
        self.archive = Archive(self.cluster, self.repo, self.spool, Events(),
                               ArchiveSettings(slice_every=0.3, queue_size=self.queue_size,
                                               base_every=self.base_every),
                               make_base)
        self.task = asyncio.create_task(self.archive.run(list(self.tables)))
        await wait_until(lambda: self.archiver and self.archiver.restorable,
                         "a base and a sealed slice past it")
        return self

    @property
    def archiver(self):
        return self.archive.archivers.get(T)

    async def new_timeline(self, old: str) -> None:
        await wait_until(lambda: self.archiver.state.timeline != old and self.archiver.restorable,
                         "a new timeline with its base and a slice past it")

    async def stop(self):
        self.archive.stop()
        await asyncio.wait_for(self.task, 30)

    async def wait_restorable(self, at: int) -> None:
        """Until the repository's timelines cover ``at``: the base marker of a timeline begun
        after a break may reach the repository after the archiver counts the timeline
        restorable and after slices past ``at`` were uploaded (seen in a loaded CI run)."""
        async def covered():
            return any(lo <= at < hi for lo, hi in restorable(await load_timelines(self.repo, T)))
        await wait_until(covered, f"{at} restorable from the repository")

    async def state_at(self, at: int) -> list[str]:
        [p] = await prepare(self.repo, [T], at, {})
        return [t async for _, texts in p.state.texts() for t in texts]


async def _table(server: FakeServer, n: int = 200) -> None:
    c = connect_fake(server)
    await c.ensure_db("app")
    await c.create_table(T, primary_key="id", shards=1, replicas=1)
    await c.insert_texts(T, sample_docs(n, pad=20))


async def test_overflow_disconnect_and_restart_each_start_a_timeline_with_a_base(
        tmp_path, primary_server: FakeServer):
    await _table(primary_server)
    s = await Setup(tmp_path, primary_server, queue_size=10).start()
    first = s.archiver.state.timeline
    primary_server.put_texts(T, sample_docs(100, pad=30))  # 100 at once into a queue of 10
    await s.new_timeline(first)
    assert s.archiver.state.breaks == {"feed-overflow": 1}
    second = s.archiver.state.timeline
    primary_server.down = True
    primary_server.put_texts(T, sample_docs(5, start=500, pad=40))
    await asyncio.sleep(0.2)
    primary_server.down = False
    await s.new_timeline(second)
    assert s.archiver.state.breaks["connection-lost"] >= 1
    await s.stop()
    s2 = await Setup(tmp_path, primary_server, queue_size=10,  # the runner restarted
                     storage=s.storage).start()
    primary_server.put_texts(T, sample_docs(3, start=900, pad=50))
    end = int(primary_server.now() * 1000) + DELTA_MS  # stamped when read
    await wait_until(lambda: s2.archive.uploaded_until and
                     min(s2.archive.uploaded_until.values()) > end, "uploaded past the end")
    await s2.wait_restorable(end)
    timelines = await load_timelines(s2.repo, T)
    assert len(timelines) >= 4 and all(tl.bases for tl in timelines)
    spans = restorable(timelines)
    assert len(spans) >= 4  # a gap at every break: overflow, disconnect, restart
    assert await s2.state_at(end) == primary_server.texts(T)
    status = (await archive_status(s2.repo, None))["tables"]["app.t"]
    assert status["breaks"]["feed-overflow"] == 1 and status["breaks"]["connection-lost"] >= 1
    assert status["starts"] == 2 and status["timelines"] == len(timelines)
    gap = spans[0][1] + (spans[1][0] - spans[0][1]) // 2
    with pytest.raises(UsageError, match="nearest restorable times"):
        await s2.state_at(gap)
    await s2.stop()


async def test_repository_unreachable_is_caught_up_from_the_spool_without_a_break(
        tmp_path, primary_server: FakeServer):
    await _table(primary_server)
    s = await Setup(tmp_path, primary_server).start()
    s.storage.down = True
    for i in range(5):
        primary_server.put_texts(T, sample_docs(10, start=1000 + 10 * i, pad=20))
        await asyncio.sleep(0.3)
    await wait_until(lambda: len(s.spool.pending()) >= 3, "slices waiting in the spool")
    s.storage.down = False
    end = int(primary_server.now() * 1000) + DELTA_MS  # stamped when read
    await wait_until(lambda: min(s.archive.uploaded_until.values()) > end and
                     not s.spool.pending(), "the spool emptied")
    await s.wait_restorable(end)
    assert s.archiver.state.breaks == {}
    timelines = await load_timelines(s.repo, T)
    assert len(timelines) == 1 and len(restorable(timelines)) == 1
    assert await s.state_at(end) == primary_server.texts(T)
    await s.stop()


class FeedNeverReady:
    """The fake cluster, except that a feed on ``stuck`` never becomes ready (as on a table
    whose server does not answer)."""

    def __init__(self, cluster, stuck: TableName) -> None:
        self.cluster, self.stuck, self.asked = cluster, stuck, asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.cluster, name)

    async def changes(self, table, **options):
        if table == self.stuck:
            self.asked.set()
            await asyncio.Event().wait()
        async for event in self.cluster.changes(table, **options):
            yield event


async def test_stop_does_not_wait_for_a_feed_that_is_not_ready(tmp_path, primary_server):
    await _table(primary_server)
    stuck = TableName("app", "stuck")
    s = await Setup(tmp_path, primary_server, tables=(T, stuck),
                    wrap=lambda c: FeedNeverReady(c, stuck)).start()
    await asyncio.wait_for(s.cluster.asked.wait(), 10)
    primary_server.put_texts(T, sample_docs(5, start=5000))
    end = int(primary_server.now() * 1000)
    await s.stop()  # within 30 s, though a feed waits up to a minute to be ready
    assert s.archive.archivers[stuck].state.timeline is None
    assert s.archiver.state.sealed_until >= end  # T's open slice was sealed, and uploaded:
    assert await s.state_at(s.archiver.state.sealed_until - 1) == primary_server.texts(T)


async def test_an_archiver_that_cannot_seal_is_cancelled_after_the_grace_and_the_run_ends(
        tmp_path, primary_server, monkeypatch, caplog):
    await _table(primary_server)
    s = await Setup(tmp_path, primary_server).start()
    monkeypatch.setattr(archive_module, "STOP_GRACE", 0.5)

    async def hung(name, blob):  # a spool on a disk that stopped answering
        await asyncio.Event().wait()
    s.spool.put = hung
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await s.stop()  # the archiver's last seal never ends: cancelled after the grace
    assert "1 table archiver(s) did not stop within 0.5 s" in caplog.text
    assert str(T) in caplog.text


async def test_a_full_spool_is_a_reported_break(tmp_path, primary_server: FakeServer):
    await _table(primary_server)
    s = await Setup(tmp_path, primary_server).start()
    s.storage.down = True
    s.spool.limit = s.spool.size + 100  # room for no slice with a change in it
    primary_server.put_texts(T, sample_docs(50, start=2000, pad=200))
    await wait_until(lambda: s.archiver.state.breaks.get("spool-full"), "the spool-full break")
    assert "is full" in s.archiver.state.last_break
    s.spool.limit = 1 << 30
    s.storage.down = False  # the timeline begun after the break gets its base now
    await wait_until(lambda: s.archiver.restorable, "the new timeline restorable")
    end = int(primary_server.now() * 1000) + DELTA_MS  # stamped when read
    await wait_until(lambda: min(s.archive.uploaded_until.values()) > end, "caught up")
    await s.wait_restorable(end)
    timelines = await load_timelines(s.repo, T)
    assert len(timelines) >= 2
    assert await s.state_at(end) == primary_server.texts(T)
    await s.stop()


async def test_merging_keeps_every_state_and_fewer_objects(tmp_path, primary_server: FakeServer):
    from drtool.changelog.merge import Level, merge_table

    await _table(primary_server, 20)
    s = await Setup(tmp_path, primary_server).start()
    times = []
    for i in range(12):  # each key written once: every state is exact, merged or not
        primary_server.put_texts(T, sample_docs(2, start=3000 + 2 * i, pad=10))
        times.append(int(primary_server.now() * 1000))
        await asyncio.sleep(0.15)
    end = int(primary_server.now() * 1000) + DELTA_MS  # stamped when read
    await wait_until(lambda: min(s.archive.uploaded_until.values()) > end, "uploaded")
    await s.wait_restorable(end)
    await s.stop()
    before = [await s.state_at(t) for t in times]
    count = len([n for n in await s.repo.list_log() if "/s-" in n])
    report = await merge_table(s.repo, "app.t", end + 10_000, (Level(1, 60_000, 1000),))
    after_count = len([n for n in await s.repo.list_log() if "/s-" in n])
    assert report.merged >= 1 and after_count < count
    assert [await s.state_at(t) for t in times] == before
    assert await s.state_at(end) == primary_server.texts(T)  # δ after the last write
    from drtool.changelog.verify_log import verify_log
    _, problems = await verify_log(s.repo, read_data=True)
    assert problems == []


async def test_periodic_bases_on_one_timeline_shorten_restores_and_let_retention_trim(
        tmp_path, primary_server: FakeServer):
    from drtool.changelog.retention import plan_log_retention
    from drtool.changelog.timeline import plan_restore

    await _table(primary_server, 20)
    s = Setup(tmp_path, primary_server)
    s.base_every = 1.0
    await s.start()
    await wait_until(lambda: len(s.bases_written) >= 3, "three bases on the timeline")
    primary_server.put_texts(T, sample_docs(3, start=7000, pad=10))
    end = int(primary_server.now() * 1000) + DELTA_MS  # stamped when read
    await wait_until(lambda: min(s.archive.uploaded_until.values()) > end, "uploaded")
    await s.wait_restorable(end)
    await s.stop()
    [tl] = await load_timelines(s.repo, T)
    assert len(tl.bases) >= 3 and len(restorable([tl])) == 1
    plan = plan_restore(T, [tl], end)
    assert plan.base == tl.bases[-1] and plan.slices[0].t1 > tl.bases[-1].from_ms
    assert await s.state_at(end) == primary_server.texts(T)
    now = int(primary_server.now() * 1000)
    trim = await plan_log_retention(s.repo, (now - tl.bases[-1].restorable_from) / 1000 + 0.1,
                                    now)
    assert trim.delete and all("/s-" in n or "/b-" in n for n in trim.delete)
    for name in trim.delete:
        await s.repo.delete_log(name)
    assert await s.state_at(end) == primary_server.texts(T)  # the window still restores
