"""Repository locks (drtool/repo/locks.py) over MemoryStorage: the shared/exclusive protocol,
staleness by an injected clock, refresh, lost locks, unlock, and the interleavings that make a
snapshot running during prune safe."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from drtool.repo import crypto
from drtool.snapshots import retention
from drtool.errors import RepositoryError
from drtool.repo.manifest import Layer, Manifest, Range, SegmentRef, TableEntry
from drtool.model import TableMeta, TableName
from drtool.config.policy import RetentionPolicy
from drtool.repo import locks as L
from drtool.repo.objects import data_name, new_snapshot_id
from drtool.repo.repository import KeySources, Repository
from drtool.storage.memory import MemoryStorage

T0 = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
async def repo(tmp_path):
    ident = tmp_path / "identity"
    crypto.write_identity_file(ident)
    return await Repository.create(MemoryStorage("memory://locks"), KeySources(identity_file=ident))


def lock_names(repo) -> list[str]:
    return sorted(n for n in repo.storage.objects if n.startswith("locks/"))


def manifest_of(refs: list[SegmentRef], when: datetime = T0) -> Manifest:
    """A one-table manifest referencing ``refs``, taken at ``when``."""
    meta = TableMeta(TableName("app", "t"), "id", 1, 1, "single", "hard", (), None)
    entry = TableEntry(meta, sum(r.count for r in refs), "", tuple(Range(r.upto, r.count, r.digest) for r in refs),
                       (Layer(segments=tuple(refs)),), "2026-11-24T04:00:00Z", "2026-11-24T04:00:01Z")
    return Manifest(new_snapshot_id(when), when.strftime("%Y-%m-%dT%H:%M:%SZ"), "test", "primary", (entry,))


async def store(repo, text: bytes, upto=None) -> SegmentRef:
    """A data object holding ``text`` and its index object, as a segment reference."""
    obj, index = await repo.put_data(text), await repo.put_index(b"index of " + text)
    return SegmentRef(obj.id, upto, 1, "d", len(text), obj.stored_size, index.id, index.stored_size)


async def test_lock_object_is_sealed_and_round_trips(repo):
    held = repo.lock("shared", "snapshot", clock=Clock())
    await held.acquire()
    [name] = lock_names(repo)
    blob = repo.storage.objects[name]
    assert blob[:5] == b"DRTL\x01" and b"snapshot" not in blob  # host and purpose are sealed
    [record] = await repo.locks.list()
    assert (record.kind, record.purpose, record.created, record.refreshed) == ("shared", "snapshot", T0, T0)
    assert record.holder == held.holder and record.pid > 0 and record.host
    await held.release()
    assert lock_names(repo) == []


async def test_shared_locks_coexist_exclusive_excludes_everything(repo):
    clock = Clock()
    async with repo.lock("shared", "snapshot", clock=clock):
        async with repo.lock("shared", "snapshot", clock=clock):
            assert len(lock_names(repo)) == 2
            with pytest.raises(RepositoryError, match="locked by snapshot on host .* since 2026-11-24 04:00:00"):
                async with repo.lock("exclusive", "prune", clock=clock):
                    pytest.fail("prune got the lock while snapshots run")
            assert len(lock_names(repo)) == 2  # prune removed its own lock object again
    async with repo.lock("exclusive", "prune", clock=clock):
        for kind in ("shared", "exclusive"):
            with pytest.raises(RepositoryError, match="locked by prune"):
                await repo.lock(kind, "snapshot", clock=clock).acquire()
        assert len(lock_names(repo)) == 1
    assert lock_names(repo) == []


async def test_stale_locks_are_ignored_and_unlock_removes_only_them(repo):
    clock = Clock()
    dead = repo.lock("exclusive", "prune", clock=clock)
    await dead.acquire()  # a prune that died: never refreshed, never released
    clock.advance(L.STALE_AFTER - 1)
    with pytest.raises(RepositoryError, match="locked by prune"):
        await repo.lock("shared", "snapshot", clock=clock).acquire()
    clock.advance(2)
    async with repo.lock("shared", "snapshot", clock=clock):
        report = await retention.unlock(repo, now=clock())
        assert [r.id for r in report.removed] == dead._objects
        assert [r.purpose for r in report.kept] == ["snapshot"]  # the live one stays
        assert len(lock_names(repo)) == 1
        forced = await retention.unlock(repo, force=True, now=clock())
        assert [r.purpose for r in forced.removed] == ["snapshot"] and lock_names(repo) == []


async def test_damaged_lock_blocks_everyone_until_forced(repo):
    await repo.storage.put("locks/" + "ab" * 16, b"DRTL\x01" + b"\0" * 40)
    await repo.storage.put("locks/not-a-lock", b"ignored")
    with pytest.raises(RepositoryError, match="unreadable lock object .*failed authentication.*unlock --force"):
        await repo.lock("shared", "snapshot").acquire()
    assert (await retention.unlock(repo)).removed == []
    assert len((await retention.unlock(repo, force=True)).removed) == 1
    async with repo.lock("exclusive", "prune"):
        pass


async def test_refresh_writes_new_generation_and_keeps_the_previous(repo):
    clock = Clock()
    sleeping, wake = asyncio.Queue(), asyncio.Queue()

    async def sleep(seconds):
        assert seconds == 7
        sleeping.put_nowait(None)
        await wake.get()

    async with repo.lock("shared", "snapshot", clock=clock, sleep=sleep, refresh_every=7) as held:
        first = lock_names(repo)
        for step in range(3):
            await sleeping.get()  # the refresher waits
            clock.advance(L.REFRESH_EVERY)
            wake.put_nowait(None)
        await sleeping.get()  # three refreshes done
        assert len(lock_names(repo)) == 2 and not set(first) & set(lock_names(repo))
        records = await repo.locks.list()
        assert {r.holder for r in records} == {held.holder}
        assert max(r.refreshed for r in records) == T0 + timedelta(seconds=3 * L.REFRESH_EVERY)
        assert {r.created for r in records} == {T0}
        held.check()  # refreshed in time: not lost
    assert lock_names(repo) == []


async def test_a_lost_lock_stops_the_snapshot_before_its_manifest(repo):
    clock = Clock()
    async with repo.lock("shared", "snapshot", clock=clock) as held:
        ref = await store(repo, b'{"id":1}\n')
        clock.advance(L.LOST_AFTER + 1)  # suspended: others may soon treat the lock as stale
        await held.refresh()  # a late refresh does not make the gap go away
        with pytest.raises(RepositoryError, match="snapshot stopped: its shared repository lock was lost"):
            await repo.put_manifest(manifest_of([ref]))
    assert await repo.list_snapshots() == []
    async with repo.lock("shared", "snapshot", clock=clock):
        await repo.put_manifest(manifest_of([ref]))  # a fresh lock is fine
    assert len(await repo.list_snapshots()) == 1


async def test_unlock_force_makes_the_holder_notice(repo):
    clock = Clock()
    async with repo.lock("exclusive", "prune", clock=clock) as held:
        await retention.unlock(repo, force=True, now=clock())
        await held.refresh()
        with pytest.raises(RepositoryError, match="lock object was removed"):
            held.check()


async def test_snapshot_that_deduplicated_an_object_keeps_it_through_prune(repo):
    """The dedup window: S1 stored A, was forgotten; S2 finds A already stored (no upload) and
    must still find it when its manifest lands, whatever prune tries meanwhile."""
    async with repo.lock("shared", "snapshot"):
        a = await store(repo, b'{"id":"a"}\n')
        old = manifest_of([a])
        await repo.put_manifest(old)
    await repo.delete_manifest(old.id)  # forgotten: A is unreferenced now
    async with repo.lock("shared", "snapshot"):
        again = await repo.put_data(b'{"id":"a"}\n')
        assert not again.new  # deduplicated: S2 relies on the stored A
        with pytest.raises(RepositoryError, match="locked by snapshot"):
            await retention.prune(repo)
        b = await store(repo, b'{"id":"b"}\n', upto=None)
        await repo.put_manifest(manifest_of([a, b]))
    report = await retention.prune(repo)
    assert report.objects_deleted == 0 and data_name(a.id) in repo.storage.objects
    assert a.index in await repo.list_index()


class GatedStorage(MemoryStorage):
    """Lets a test hold every caller at ``list('locks/')`` until ``waiting`` callers arrived:
    both takers have written their lock objects before either lists."""

    def __init__(self, waiting: int) -> None:
        super().__init__("memory://gated")
        self.arrived, self.waiting, self.go = 0, waiting, asyncio.Event()

    async def list(self, prefix: str = ""):
        if prefix == "locks/" and self.waiting:
            self.arrived += 1
            if self.arrived >= self.waiting:
                self.waiting = 0
                self.go.set()
            await self.go.wait()
        async for info in super().list(prefix):
            yield info


async def test_simultaneous_takers_never_both_win(tmp_path):
    ident = tmp_path / "identity"
    crypto.write_identity_file(ident)
    for first, second in (("shared", "exclusive"), ("exclusive", "shared"), ("exclusive", "exclusive")):
        storage = GatedStorage(waiting=2)
        repo = await Repository.create(storage, KeySources(identity_file=ident))
        takers = [repo.lock(first, "one"), repo.lock(second, "two")]
        results = await asyncio.gather(*(t.acquire() for t in takers), return_exceptions=True)
        won = [t for t, r in zip(takers, results) if r is None]
        assert all(r is None or isinstance(r, RepositoryError) for r in results), results
        assert len(won) <= 1, (first, second)  # both saw each other's object: at most one stays
        assert lock_names(repo) == sorted("locks/" + i for t in won for i in t._objects)
        for t in won:
            await t.release()


async def test_prune_waits_for_no_one_but_forget_dry_run_takes_no_lock(repo):
    async with repo.lock("shared", "snapshot"):
        ref = await store(repo, b'{"id":1}\n')
        await repo.put_manifest(manifest_of([ref]))
        report = await retention.forget(repo, RetentionPolicy(keep_last=1), dry_run=True, prune=True)
        assert report.prune.objects_deleted == 0 and len(report.kept) == 1
        with pytest.raises(RepositoryError, match="locked by snapshot"):
            await retention.forget(repo, RetentionPolicy(keep_last=1))
