"""Leases held for a long time (drtool.coordination.leases) on the fake and, with
DRTOOL_TEST_RETHINKDB, a real server: the lease's generation (token), a dead process's lease
taken at once on its own host, spares' records, and the fence on every write."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from drtool.coordination.leases import FencedCluster, LeaseExpired, LeaseKeeper, take_lease
from drtool.coordination.roles import member_lease, spare_lease
from drtool.coordination.state import LeaseHolder, StateStore, runner_lease
from drtool.model import TableName

from tests.test_state import store as state_store  # noqa: F401 (the fixture, fake and real)


@pytest.fixture
async def store(state_store: StateStore):
    await state_store.ensure()
    return state_store


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_the_token_grows_each_time_the_lease_changes_hands(store: StateStore):
    name = runner_lease(store.policy)
    a, b = LeaseHolder("a", "h1", 1), LeaseHolder("b", "h2", 2)
    assert (await store.acquire_lease(name, a, ttl=30)).lease.token == 1
    assert (await store.acquire_lease(name, a, ttl=30)).lease.token == 1  # ours already
    assert (await store.renew_lease(name, a, ttl=-1)).lease.token == 1  # expires now
    taken = await store.acquire_lease(name, b, ttl=30)
    assert taken.acquired and taken.lease.token == 2
    assert (await store.renew_lease(name, b, ttl=30)).lease.token == 2
    assert (await store.read_lease(name)).token == 2


async def test_a_lease_of_a_process_gone_on_this_host_is_taken_at_once(store: StateStore):
    name, host = runner_lease(store.policy), "this-host"
    gone = LeaseHolder("gone", host, dead_pid())
    assert (await store.acquire_lease(name, gone, ttl=600)).acquired
    me = LeaseHolder("me", host, os.getppid())  # a live process
    got = await take_lease(store, name, me, ttl=30)
    assert got.acquired and got.lease.holder == "me" and got.lease.token == 2
    # a live process on this host, and any process on another host, keep their lease
    refused = await take_lease(store, name, LeaseHolder("next", host, os.getpid()), ttl=30)
    assert not refused.acquired and refused.lease.holder == "me"
    other = LeaseHolder("elsewhere", "another-host", dead_pid())
    await store.release_lease(name, "me")
    assert (await store.acquire_lease(name, other, ttl=600)).acquired
    refused = await take_lease(store, name, me, ttl=30)
    assert not refused.acquired and refused.lease.holder == "elsewhere"


async def test_spares_are_listed_until_they_expire_or_leave(store: StateStore):
    p = store.policy
    s1, s2 = LeaseHolder("s1", "h", 1), LeaseHolder("s2", "h", 2)
    await store.acquire_lease(spare_lease(p, "s1"), s1, ttl=30)
    await store.acquire_lease(spare_lease(p, "s2"), s2, ttl=30)
    await store.acquire_lease(runner_lease(p), s1, ttl=30)
    assert [x.holder for x in await store.leases(spare_lease(p))] == ["s1", "s2"]
    await store.renew_lease(spare_lease(p, "s2"), s2, ttl=-1)
    await store.release_lease(spare_lease(p, "s1"), "s1")
    assert await store.leases(spare_lease(p)) == []


async def test_a_members_note_is_stored_with_each_renewal_and_read_back(store: StateStore):
    name, a = member_lease(store.policy, "a"), LeaseHolder("a", "h1", 1)
    await store.acquire_lease(name, a, ttl=30, note={"tables": 3, "streaming": 2, "lag": 1.5})
    await store.acquire_lease(name, a, ttl=30, note={"tables": 3, "streaming": 3, "lag": 0.0})
    [lease] = await store.leases(member_lease(store.policy))
    assert lease.holder == "a" and lease.note == {"tables": 3, "streaming": 3, "lag": 0.0}
    assert lease.token == 1  # the note changes nothing of the lease itself
    await store.acquire_lease(runner_lease(store.policy), a, ttl=30)
    assert (await store.read_lease(runner_lease(store.policy))).note is None


async def test_no_write_passes_the_fence_after_the_local_deadline(store: StateStore):
    now = [100.0]
    name = runner_lease(store.policy)
    keeper = LeaseKeeper(store, name, LeaseHolder("k", "h", 1), ttl=9, clock=lambda: now[0])
    assert (await keeper.take()).acquired
    assert keeper.deadline == 100.0 + 9 - 3  # sent at 100, a third of the ttl as margin
    t = TableName(store.db, "fenced")
    fenced = FencedCluster(store.cluster, keeper)
    await fenced.create_table(t, primary_key="id", shards=1, replicas=1)
    await fenced.insert_texts(t, ['{"id":1}'])
    now[0] = 106.5  # past the deadline: nothing is written, reads still work
    with pytest.raises(LeaseExpired, match=r"lease .*:runner \(generation 1\) of runner k was "
                       "not renewed in time; not writing until it is renewed"):
        await fenced.insert_texts(t, ['{"id":2}'])
    with pytest.raises(LeaseExpired):
        await fenced.delete_keys(t, ["1"])
    assert [k for k, _ in await fenced.get_docs(t, ["1", "2"])] == ["1"]
    assert (await keeper.renew()).acquired  # renewed: writing again
    await fenced.insert_texts(t, ['{"id":2}'])
    assert len(await store.cluster.get_docs(t, ["1", "2"])) == 2
