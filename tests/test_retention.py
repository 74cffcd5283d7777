"""Retention (drtool/snapshots/retention.py): restic-style selection on synthetic snapshot times,
parents kept, bad rules; forget and prune on a repository over MemoryStorage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drtool.repo import crypto
from drtool.snapshots import retention
from drtool.snapshots.retention import Candidate, select
from drtool.errors import RepositoryError, UsageError
from drtool.config.policy import RetentionPolicy as R
from drtool.repo.objects import data_name
from drtool.repo.repository import KeySources, Repository
from drtool.storage.memory import MemoryStorage
from tests.test_locks import T0, manifest_of, store


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snaps(*times: str, parents: dict[int, int] | None = None) -> list[Candidate]:
    """Candidates s0, s1, ... at the given times; ``parents`` maps index -> parent index."""
    parents = parents or {}
    return [Candidate(f"s{i}", at(t), f"s{parents[i]}" if i in parents else None)
            for i, t in enumerate(times)]


def kept(candidates, **rules) -> list[str]:
    return sorted(select(candidates, R(**rules)), key=lambda s: int(s[1:]))


def test_keep_last_keeps_the_newest_whatever_the_input_order():
    cs = snaps("2026-01-01 10:00", "2026-01-01 12:00", "2026-01-01 11:00", "2026-01-01 09:00")
    assert kept(cs, keep_last=2) == ["s1", "s2"]
    assert kept(cs, keep_last=10) == ["s0", "s1", "s2", "s3"]
    assert select(cs, R(keep_last=1)) == {"s1": ["last"]}


def test_keep_hourly_takes_the_newest_of_each_of_the_last_n_hours_with_snapshots():
    cs = snaps("2026-01-01 10:05", "2026-01-01 10:55", "2026-01-01 11:10",
               "2026-01-01 14:00", "2026-01-01 14:30")  # no snapshot at 12 and 13
    assert kept(cs, keep_hourly=3) == ["s1", "s2", "s4"]
    assert select(cs, R(keep_hourly=1)) == {"s4": ["hourly 2026-01-01 14:00"]}


def test_daily_weekly_monthly_buckets():
    cs = snaps("2026-01-30 08:00", "2026-01-31 23:00", "2026-02-01 01:00", "2026-02-01 20:00",
               "2026-02-09 00:00")  # Mon 2026-02-09 starts ISO week 7; 01-30..02-01 are week 5
    assert kept(cs, keep_daily=3) == ["s1", "s3", "s4"]
    assert kept(cs, keep_weekly=2) == ["s3", "s4"]
    assert kept(cs, keep_monthly=2) == ["s1", "s4"]
    reasons = select(cs, R(keep_weekly=1, keep_monthly=1, keep_daily=1))
    assert reasons == {"s4": ["daily 2026-02-09", "weekly 2026-W07", "monthly 2026-02"]}


def test_iso_week_spans_the_new_year():
    cs = snaps("2026-12-31 10:00", "2027-01-03 10:00", "2027-01-04 10:00")  # 2026-W53, 2026-W53, 2027-W01
    assert kept(cs, keep_weekly=2) == ["s1", "s2"]
    assert select(cs, R(keep_weekly=2))["s1"] == ["weekly 2026-W53"]


def test_rules_are_a_union():
    cs = snaps(*(f"2026-03-{d:02d} 12:00" for d in range(1, 11)))
    assert kept(cs, keep_last=2, keep_daily=4) == ["s6", "s7", "s8", "s9"]
    assert kept(cs, keep_last=1, keep_monthly=3) == ["s9"]  # one month only


def test_rules_keep_what_they_name_whatever_builds_on_what():
    """Manifests are self-contained (prune keeps the objects a kept child references), so a
    parent is not kept for being a parent: keep-last 2 keeps two snapshots."""
    cs = snaps("2026-01-01 01:00", "2026-01-01 02:00", "2026-01-01 03:00", "2026-01-01 04:00",
               "2026-01-01 05:00", parents={2: 1, 3: 2, 4: 0})
    assert select(cs, R(keep_last=1)) == {"s4": ["last"]}
    assert sorted(select(cs, R(keep_last=2))) == ["s3", "s4"]


def test_unreadable_manifests_are_always_kept():
    cs = snaps("2026-01-01 01:00", "2026-01-01 02:00") + [
        Candidate("s9", at("2025-01-01 00:00"), readable=False, problem="failed authentication")]
    assert select(cs, R(keep_last=1)) == {"s1": ["last"], "s9": ["manifest unreadable (failed authentication)"]}


@pytest.mark.parametrize("rules, message", [
    (R(), "no retention rule given"),
    (R(keep_last=0, keep_daily=0), "refusing to forget everything"),
    (R(keep_last=-1, keep_daily=3), "--keep-last must be >= 0, got -1"),
])
def test_bad_rules(rules, message):
    with pytest.raises(UsageError, match=message):
        select(snaps("2026-01-01 01:00"), rules)


# --- forget and prune on a repository -----------------------------------------------------------
@pytest.fixture
async def repo(tmp_path):
    ident = tmp_path / "identity"
    crypto.write_identity_file(ident)
    return await Repository.create(MemoryStorage("memory://retention"), KeySources(identity_file=ident))


async def three_snapshots(repo):
    """s1 = {a, b}, s2 = {b, c}, s3 = {c, d}: objects shared between neighbours."""
    objs = {n: await store(repo, f'{{"id":"{n}"}}\n'.encode()) for n in "abcd"}
    ids = []
    for hour, names in enumerate(("ab", "bc", "cd")):
        m = manifest_of([objs[n] for n in names], T0 + timedelta(hours=hour))
        await repo.put_manifest(m)
        ids.append(m.id)
    return objs, ids


async def test_forget_dry_run_changes_nothing_then_forget_removes_manifests_only(repo):
    objs, ids = await three_snapshots(repo)
    before = dict(repo.storage.objects)
    report = await retention.forget(repo, R(keep_last=2), dry_run=True, prune=True)
    assert repo.storage.objects == before
    assert report.prune.objects_deleted == 2 and report.prune.bytes_deleted == objs["a"].total_stored
    assert len(report.removed) == 1 and len(report.kept) == 2

    report = await retention.forget(repo, R(keep_last=2))
    assert report.prune is None
    assert sorted(await repo.list_snapshots()) == sorted(report_id.id for report_id in report.kept)
    assert set(await repo.list_data()) == {o.id for o in objs.values()}  # data stays
    assert set(await repo.list_index()) == {o.index for o in objs.values()}
    assert not any(n.startswith("locks/") for n in repo.storage.objects)


async def test_prune_deletes_exactly_the_unreferenced_objects(repo):
    objs, ids = await three_snapshots(repo)
    stray = await store(repo, b'{"id":"interrupted snapshot"}\n')
    for sid in ids[:2]:
        await repo.delete_manifest(sid)
    report = await retention.prune(repo)
    assert set(await repo.list_data()) == {objs["c"].id, objs["d"].id}
    assert set(await repo.list_index()) == {objs["c"].index, objs["d"].index}
    assert report.objects_deleted == 6 and report.objects_referenced == 4 and report.snapshots == 1
    assert report.bytes_deleted == sum(r.total_stored for r in (objs["a"], objs["b"], stray))
    again = await retention.prune(repo)  # idempotent: nothing more to do
    assert again.objects_deleted == 0 and again.objects_stored == 4


async def test_prune_refuses_when_a_manifest_cannot_be_read(repo):
    objs, ids = await three_snapshots(repo)
    await repo.delete_manifest(ids[0])
    name = f"snapshots/{ids[2]}"
    blob = bytearray(repo.storage.objects[name])
    blob[-1] ^= 1
    repo.storage.objects[name] = bytes(blob)
    with pytest.raises(RepositoryError, match=f"prune refused, nothing deleted: snapshot {ids[2]}"):
        await retention.prune(repo)
    assert set(await repo.list_data()) == {o.id for o in objs.values()}
    report = await retention.forget(repo, R(keep_last=1))  # the damaged one is never forgotten
    assert {d.id for d in report.kept} == {ids[1], ids[2]}  # ids[1] is the newest readable one
    assert "manifest unreadable" in next(d for d in report.kept if d.id == ids[2]).reasons[0]
    assert data_name(objs["a"].id) in repo.storage.objects
