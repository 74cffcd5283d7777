"""The standby runner against the fake clusters: copy, streaming, repairs, leases, schema."""

from __future__ import annotations

import asyncio

import pytest

from drtool.cluster.fake import FakeServer
from drtool.coordination.state import StateStore
from drtool.errors import LeaseHeld
from drtool.model import IndexDef, TableName
from drtool.config.policy import load_policy

from tests.conftest import connect_fake, sample_docs, write_policy
from tests.replication_helpers import Background, replication_section, wait_equal, wait_until


@pytest.fixture
def policy(tmp_path, primary_server, standby_server):
    return load_policy(write_policy(tmp_path, extra=replication_section()).path)


def doc(i: int, v: str = "x") -> str:
    return '{"id":%d,"v":"%s"}' % (i, v)


async def test_initial_copy_with_writes_during_it_then_streaming(policy, primary_server: FakeServer,
                                                                 standby_server: FakeServer):
    t = TableName("app", "items")
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    await primary.create_table(t, primary_key="id", shards=1, replicas=1)
    await primary.insert_texts(t, sample_docs(3000))
    await primary.create_index(t, IndexDef("by_n", FakeServer.index_blob()))
    written = []

    def write_during_copy(table, key):  # lands while the copy is reading
        if table == t and not written:
            written.append(key)
            primary_server.put_texts(t, [doc(10**6), '{"id":"k0000005","v":"changed"}'])
            primary_server.delete(t, ['"k0002999"'])

    primary_server.on_scan_row(write_during_copy)
    async with Background(policy) as bg:
        await bg.streaming(1)
        primary_server.on_scan_row(None)
        assert written
        await wait_equal(policy)
        primary_server.put_texts(t, [doc(1), doc(2)])
        primary_server.put_texts(t, ['{"id":1,"v":"again"}'])
        primary_server.delete(t, ["2", '"k0000007"'])
        found = await wait_equal(policy)
        assert standby_server.texts(t) == primary_server.texts(t)
        assert [d.table for d in found] == [t]
        assert (await connect_fake(standby_server).table_meta(t)).indexes == (
            IndexDef("by_n", FakeServer.index_blob()),)
        assert standby_server.table_obj(t).hooked_writes == 0


async def test_overflow_and_dropped_feed_are_repaired_without_recopy(
        tmp_path, primary_server: FakeServer, standby_server: FakeServer):
    section = replication_section(changefeed_queue_size="10")
    policy = load_policy(write_policy(tmp_path, extra=section).path)
    primary = connect_fake(primary_server)
    t = TableName("app", "t")
    await primary.ensure_db("app")
    await primary.create_table(t, primary_key="id", shards=1, replicas=1)
    await primary.insert_texts(t, [doc(i) for i in range(500)])
    async with Background(policy) as bg:
        await bg.streaming(1)
        rep = bg.runner.replicators[t]
        assert rep.stats.copied == 500
        # 100 changes at once into a feed that keeps 10: the server drops 90 and says so
        primary_server.put_texts(t, [doc(i, "new") for i in range(100)])
        await wait_until(lambda: rep.stats.repairs == 1 and rep.state == "streaming", "repair")
        await wait_equal(policy)
        assert rep.stats.last_repair["reason"] == "feed-overflow"
        assert rep.stats.last_repair["written"] == 90  # the lost changes, not the table
        # a dropped connection loses what is written until a new feed is ready
        primary_server.down = True
        primary_server.put_texts(t, [doc(2, "while down")])
        await asyncio.sleep(0.1)
        primary_server.down = False
        await wait_until(lambda: rep.stats.repairs == 2 and rep.state == "streaming", "repair")
        await wait_equal(policy)
        assert rep.stats.last_repair["reason"] == "disconnect"
        assert rep.stats.copied == 500  # never copied again
        states = await StateStore(connect_fake(standby_server), policy.replication.state_db,
                                  policy.name).table_states()
        assert [(s.table, s.state) for s in states] == [(t, "streaming")]
        assert states[0].last_repair["reason"] == "disconnect"


async def test_second_runner_refused_then_takes_over_an_expired_lease(
        policy, primary_server, standby_server):
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    await primary.create_table(TableName("app", "t"), primary_key="id", shards=1, replicas=1)
    async with Background(policy) as first:
        await first.streaming(1)
        second = Background(policy, wait=False)  # --no-wait
        with pytest.raises(LeaseHeld) as refused:
            await second.runner.run()
        assert f"another runner holds the lease on the standby: runner {first.runner.holder.id}" \
            in str(refused.value)
        assert "holds it until" in str(refused.value)
    # released on stop: a new runner starts at once
    async with Background(policy) as third:
        await third.streaming(1)


async def test_new_table_and_new_index_followed(policy, primary_server, standby_server):
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    a, b = TableName("app", "a"), TableName("app", "b")
    await primary.create_table(a, primary_key="id", shards=1, replicas=1)
    async with Background(policy) as bg:
        await bg.streaming(1)
        await primary.create_table(b, primary_key="key", shards=1, replicas=1)
        await primary.insert_texts(b, ['{"key":"x"}'])
        await bg.streaming(2)
        await primary.create_index(a, IndexDef("by_v", FakeServer.index_blob()))
        standby = connect_fake(standby_server)

        async def indexed():
            return (await standby.table_meta(a)).indexes

        await wait_until(indexed, "the new index on the standby")
        await primary.insert_texts(b, ['{"key":"y"}'])
        await wait_equal(policy)
        assert (await standby.table_meta(b)).primary_key == "key"


async def test_standby_back_after_an_outage_is_repaired_even_without_failed_writes(
        policy, primary_server: FakeServer, standby_server: FakeServer):
    # A restarted standby may have lost soft-durability writes that were acknowledged: no
    # write of the runner fails, yet the table differs. The runner repairs after reconnecting.
    t = TableName("app", "quiet")
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    await primary.create_table(t, primary_key="id", shards=1, replicas=1)
    await primary.insert_texts(t, [doc(i) for i in range(50)])
    async with Background(policy) as bg:
        await bg.streaming(1)
        rep = bg.runner.replicators[t]
        standby_server.down = True
        await asyncio.sleep(1.5)  # at least one heartbeat tick fails
        standby_server.delete(t, ["3", "4"])  # lost in the "restart"
        standby_server.down = False
        assert rep.stats.repairs == 0  # it was copied, never repaired yet
        await wait_until(lambda: rep.stats.repairs == 1 and rep.state == "streaming",
                         "a repair after the reconnect")
        await wait_equal(policy)
        assert rep.stats.last_repair["reason"] == "reconnect"
        assert rep.stats.last_repair["written"] == 2


async def test_a_trickle_of_single_changes_is_written_a_few_at_a_time(
        policy, primary_server: FakeServer, standby_server: FakeServer):
    """Changes arriving one by one, a millisecond apart, are gathered into batches (the feed
    answers at most every ``feed_gather``) instead of one write each: fewer apply batches
    than changes, and nothing lost."""
    from drtool.standby.events import Events, Metrics

    class Batches(Metrics):
        def __init__(self) -> None:
            self.count = 0

        def batch_latency(self, seconds: float) -> None:
            self.count += 1

    t = TableName("app", "trickle")
    primary = connect_fake(primary_server)
    await primary.ensure_db("app")
    await primary.create_table(t, primary_key="id", shards=1, replicas=1)
    batches = Batches()
    async with Background(policy, Events(metrics=batches)) as bg:
        await bg.streaming(1)
        await asyncio.sleep(1.5)  # the heartbeat table's own batches, then count from here
        before = batches.count
        for i in range(100):
            primary_server.put_texts(t, [doc(i)])
            await asyncio.sleep(0.001)
        await wait_equal(policy)
        heartbeats = 5  # at most this many of the batches are the heartbeat's meanwhile
        assert batches.count - before <= 100 / 3 + heartbeats, batches.count - before
