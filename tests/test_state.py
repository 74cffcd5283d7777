"""drtool's state database (drtool.coordination.state) on the fake and, with DRTOOL_TEST_RETHINKDB,
on a real server: roles compare-and-set, leases on the server's clock, heartbeat and lag,
table states. Every test uses its own uniquely named state database and drops it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from drtool.coordination.state import (
    STATE_TABLES, LeaseHolder, Roles, StateStore, TableState, lag_seconds, newest_roles,
    runner_lease,
)
from drtool.model import TableName
from drtool.config.policy import TablesPolicy

from tests.replication_helpers import fake_or_real_cluster


@pytest.fixture(params=["fake", "real"])
async def store(request):
    cluster = await fake_or_real_cluster(request.param, "standby")
    db = "drtool_state_" + uuid.uuid4().hex[:8]
    s = StateStore(cluster, db, "pol_" + uuid.uuid4().hex[:6])
    try:
        yield s
    finally:
        await cluster.drop_db(db)
        await cluster.close()


async def test_nothing_recorded_before_ensure(store: StateStore):
    assert await store.read_roles() == Roles()
    assert await store.read_lease(runner_lease(store.policy)) is None
    assert await store.read_heartbeat() is None
    assert await store.table_states() == []
    assert await store.read_runner() is None


async def test_ensure_is_idempotent_and_concurrent(store: StateStore):
    await asyncio.gather(store.ensure(), store.ensure())
    await store.ensure()
    tables = {t.table for t in await store.cluster.list_tables() if t.db == store.db}
    assert tables == set(STATE_TABLES)


async def test_roles_compare_and_set_on_generation(store: StateStore):
    await store.ensure()
    ok, now = await store.write_roles(Roles(1, "standby", extra={"fenced": ["app"]}),
                                      expected_generation=0)
    assert ok and (now.generation, now.primary, now.extra) == (1, "standby", {"fenced": ["app"]})
    assert now.updated is not None
    stale, kept = await store.write_roles(Roles(1, "primary"), expected_generation=0)
    assert not stale and kept.primary == "standby"
    step = Roles(1, "standby", step="stop-replication", extra=kept.extra)
    assert (await store.write_roles(step, expected_generation=1))[0]
    read = await store.read_roles()
    assert (read.step, read.extra, read.source, read.target) == (
        "stop-replication", {"fenced": ["app"]}, "standby", "primary")
    assert newest_roles(Roles(), read, Roles(0)).generation == 1
    assert newest_roles() == Roles()


async def test_lease_refused_then_taken_over_after_expiry(store: StateStore):
    await store.ensure()
    name = runner_lease(store.policy)
    a = LeaseHolder("runner-a", "host-a", 111, 0)
    b = LeaseHolder("runner-b", "host-b", 222, 0)
    got = await store.acquire_lease(name, a, ttl=30)
    assert got.acquired and got.lease.holder == "runner-a" and not got.lease.expired
    assert got.lease.expires > got.lease.now
    refused = await store.acquire_lease(name, b, ttl=30)
    assert not refused.acquired
    assert refused.lease.holder == "runner-a"
    assert "runner runner-a on host-a (pid 111) holds it until" in refused.lease.describe()
    assert (await store.renew_lease(name, a, ttl=30)).acquired
    assert not (await store.renew_lease(name, b, ttl=30)).acquired
    assert not await store.release_lease(name, "runner-b")
    # a holder that stops renewing: its lease runs out on the server's clock
    assert (await store.renew_lease(name, a, ttl=-1)).acquired
    assert (await store.read_lease(name)).expired
    taken = await store.acquire_lease(name, b, ttl=30)
    assert taken.acquired and taken.lease.holder == "runner-b"
    assert not (await store.renew_lease(name, a, ttl=30)).acquired  # the old holder lost it
    assert await store.release_lease(name, "runner-b")
    assert await store.read_lease(name) is None
    assert await store.release_lease(name, "runner-b")  # nothing to release: fine


async def test_heartbeat_and_lag(store: StateStore):
    await store.ensure()
    lag, beat = await lag_seconds(store.cluster, store)
    assert (lag, beat) == (None, None)
    written = await store.write_heartbeat("runner-a", 7)
    beat = await store.read_heartbeat()
    assert (beat.runner, beat.seq, beat.time) == ("runner-a", 7, pytest.approx(written, abs=0.002))
    lag, seen = await lag_seconds(store.cluster, store)
    assert seen == beat and lag >= 0


async def test_table_states_of_this_policy_only(store: StateStore):
    await store.ensure()
    other = StateStore(store.cluster, store.db, store.policy + "x")
    t1, t2 = TableName("app", "b"), TableName("app", "a")
    await store.put_table_state(TableState(t1, "copying", progress={"done": 5, "total": 10}))
    await store.put_table_state(TableState(t2, "error", message="primary key differs"))
    await other.put_table_state(TableState(t1, "streaming"))
    states = await store.table_states()
    assert [(s.table, s.state) for s in states] == [(t2, "error"), (t1, "copying")]
    assert states[1].progress == {"done": 5, "total": 10} and states[0].updated is not None
    await store.put_table_state(TableState(t1, "streaming", last_repair={"written": 3}))
    assert [s.state for s in await store.table_states()] == ["error", "streaming"]
    await store.forget_table_state(t2)
    assert [s.table for s in await store.table_states()] == [t1]
    assert [s.state for s in await other.table_states()] == ["streaming"]
    await store.put_runner({"state": "running", "snapshot": {"result": "ok"}})
    record = await store.read_runner()
    assert record["snapshot"] == {"result": "ok"} and record["id"] == store.policy
    with pytest.raises(ValueError):
        TableState(t1, "sleeping").to_doc("p")


def test_state_db_is_never_selected():
    default = TablesPolicy()
    assert not default.selects(TableName("drtool", "heartbeat"))
    assert not default.selects(TableName("rethinkdb", "users"))
    assert default.selects(TableName("app", "users"))
    own = TablesPolicy(include=("*", "drtool_state.*"), state_db="drtool_state")
    assert not own.selects(TableName("drtool_state", "roles"))
    assert own.selects(TableName("drtool", "heartbeat"))  # an ordinary database now
