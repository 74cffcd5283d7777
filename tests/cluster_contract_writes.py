"""Cluster contract, writes: insert results, conflict modes, deletes, and the changefeeds that
see them.

Part of the contract suite (``tests.cluster_contract``), run against the fake and a real
server: per-document failures come back in the WriteResult with the server's exact
``first_error`` (shared/reql-golden.json); a changefeed yields FeedReady, then every change,
and FeedOverflow with the server's message when its queue overflows, then goes on; a feed
opened with ``gather`` still delivers every change.
"""

from __future__ import annotations

import asyncio

import pytest

from drtool.model import FeedChange, FeedOverflow, FeedReady

from tests.cluster_contract_target import ContractTarget, collect, next_event
from tests.golden import GOLDEN


class WritesContract:
    """Writes and changefeeds: every test takes the ``cluster`` fixture (a ContractTarget)."""

    @pytest.mark.parametrize("case", GOLDEN["primary_key_rejected"], ids=lambda c: c["key"])
    async def test_rejected_keys_come_back_in_the_result(self, cluster: ContractTarget, case):
        key = {"null": "null", "object": '{"a":1}'}.get(case["key"])
        if key is None:
            n = int(case["key"].split()[2])
            sample = case["insert_result"].get("first_error", "")
            key = '"%s"' % (("x" if '"x' in sample else "z") * n if sample else "y" * n)
        t = await cluster.new_table()
        res = await cluster.cluster.insert_texts(t, ['{"id":%s,"v":1}' % key])
        expected = case["insert_result"]
        assert (res.inserted, res.errors) == (expected["inserted"], expected["errors"])
        assert res.first_error == expected.get("first_error")

    async def test_conflict_modes(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        assert (await c.insert_texts(t, ['{"id":"a"}'])).inserted == 1
        dup = await c.insert_texts(t, ['{"id":"a"}'])
        expected = GOLDEN["insert_duplicate_conflict_error"]
        assert (dup.inserted, dup.errors, dup.first_error) == (0, 1, expected["first_error"])
        rep = await c.insert_texts(t, ['{"id":"a","v":2}', '{"id":"b","v":1}'], conflict="replace")
        assert (rep.replaced, rep.inserted, rep.errors) == (1, 1, 0)
        same = await c.insert_texts(t, ['{"v":2,"id":"a"}'], conflict="replace")
        assert (same.unchanged, same.replaced) == (1, 0)
        skip = await c.insert_texts(t, ['{"id":"a","v":3}'], conflict="skip")
        assert (skip.unchanged, skip.replaced, skip.errors) == (1, 0, 0)
        assert await c.get_docs(t, ['"a"']) == [('"a"', '{"id":"a","v":2}')]

    async def test_delete_and_get_docs(self, cluster: ContractTarget):
        t = await cluster.new_table()
        c = cluster.cluster
        await c.insert_texts(t, ['{"id":%d,"n":%d}' % (i, i * i) for i in range(10)])
        got = await c.get_docs(t, ["7", "3", "42", '"3"', "5"])
        assert got == [("3", '{"id":3,"n":9}'), ("5", '{"id":5,"n":25}'), ("7", '{"id":7,"n":49}')]
        res = await c.delete_keys(t, ["3", "99"])
        assert (res.deleted, res.errors) == (1, 0)
        assert [k for k, _ in await collect(c.scan(t))] == [str(i) for i in range(10) if i != 3]
        assert await c.get_docs(t, ["3"]) == []

    async def test_changefeed_ready_then_changes(self, cluster: ContractTarget):
        c = cluster.cluster
        t = await cluster.new_table()
        await c.insert_texts(t, ['{"id":1,"v":"before"}'])
        feed = c.changes(t)
        try:
            assert await next_event(feed) == FeedReady()
            await c.insert_texts(t, ['{"v":"x","id":5}'])
            assert await next_event(feed) == FeedChange("5", '{"id":5,"v":"x"}')
            await c.insert_texts(t, ['{"id":5,"v":"y"}'], conflict="replace")
            assert await next_event(feed) == FeedChange("5", '{"id":5,"v":"y"}')
            await c.delete_keys(t, ["1"])
            assert await next_event(feed) == FeedChange("1", None)
        finally:
            await feed.aclose()

    async def test_changefeed_overflow_is_reported_and_feed_continues(self, cluster: ContractTarget):
        # A small changefeed_queue_size overflows at once (observed on 2.4.4: 1,000 inserts
        # into a feed of queue size 10 -> 10 changes and "skipped 990 elements", in some
        # order); the feed then goes on delivering.
        c = cluster.cluster
        t = await cluster.new_table()
        feed = c.changes(t, queue_size=10)
        try:
            assert await next_event(feed) == FeedReady()
            await c.insert_texts(t, ['{"id":%d}' % i for i in range(1000)])
            await asyncio.sleep(0.5)
            changes, overflows = [], []
            while len(changes) + sum(o.skipped for o in overflows) < 1000:
                event = await next_event(feed)
                (overflows if isinstance(event, FeedOverflow) else changes).append(event)
            # how many arrive before the queue fills depends on how fast the driver reads
            assert overflows and all(isinstance(e, FeedChange) for e in changes)
            assert overflows[0].message == (
                f"Changefeed cache over array size limit, skipped {overflows[0].skipped} elements.")
            assert len({e.key for e in changes}) == len(changes)
            assert all(e.doc == '{"id":%s}' % e.key for e in changes)
            await c.insert_texts(t, ['{"id":5000}'])
            assert await next_event(feed) == FeedChange("5000", '{"id":5000}')
        finally:
            await feed.aclose()

    async def test_gathering_feed_still_delivers_every_change(self, cluster: ContractTarget):
        # RethinkDB's numeric squash (tried first for `gather`) merges the quick changes of a
        # document and drops one created and deleted within an answer (observed on 2.4.4):
        # a standby whose copy had read that document kept it for ever. A gathering feed
        # paces its requests instead: fewer answers (4,000 changes at 500/s came in 62
        # answers with 0.1 s), every change delivered in order.
        c = cluster.cluster
        t = await cluster.new_table()
        await c.insert_texts(t, ['{"id":"old"}'])
        feed = c.changes(t, gather=0.5)
        try:
            assert await next_event(feed) == FeedReady()
            expected = []
            for n in range(10):
                await c.insert_texts(t, ['{"id":"a","n":%d}' % n], conflict="replace")
                expected.append(FeedChange('"a"', '{"id":"a","n":%d}' % n))
            await c.insert_texts(t, ['{"id":"b"}'])
            await c.delete_keys(t, ['"b"', '"old"'])
            await c.insert_texts(t, ['{"id":"c"}'])
            events = [await next_event(feed) for _ in range(14)]
            assert events[:10] == expected, events
            assert events[10] == FeedChange('"b"', '{"id":"b"}')
            assert sorted(events[11:13], key=str) == sorted(
                [FeedChange('"b"', None), FeedChange('"old"', None)], key=str)
            assert events[13] == FeedChange('"c"', '{"id":"c"}')
        finally:
            await feed.aclose()
